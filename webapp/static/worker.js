// Keeps a worker's page (/workers/<id>) current: polls GET /api/workers/<id> every 5 s while the tab
// is visible and rewrites its state, last heartbeat, speeds, reliability, audit status and recent
// chunks, with textContent only. The first rendering is the server's (templates/worker.html); the
// texts here mirror it.
"use strict";

(function () {
  const POLL_MS = 5000;
  const root = document.body.dataset.root || "";
  const idNode = document.getElementById("worker-id");
  if (!idNode || document.body.dataset.page !== "worker") return;
  const workerId = idNode.textContent;

  const count = (v) => (typeof v === "number" ? Math.round(v).toLocaleString("en-US") : "—");
  const percent = (v) => (typeof v === "number" ? (100 * v).toFixed(1) + "%" : "—");
  const when = (v) => (v ? new Date(v * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "—");

  function fact(name, text) {
    const node = document.querySelector('[data-fact="' + name + '"]');
    if (node) node.textContent = text;
  }

  function chunkRow(c) {
    const tr = document.createElement("tr");
    const job = document.createElement("td");
    const code = document.createElement("code");
    code.textContent = c.job;
    if (c.job_exists) {
      const link = document.createElement("a");
      link.href = root + "/jobs/" + encodeURIComponent(c.job);
      link.append(code);
      job.append(link);
    } else {
      job.append(code, " (deleted)");
    }
    const chunk = document.createElement("td");
    const chunkCode = document.createElement("code");
    chunkCode.textContent = c.chunk;
    chunk.append(chunkCode);
    const tokens = document.createElement("td");
    tokens.className = "num";
    tokens.textContent = c.tokens;
    tr.append(job, chunk, tokens);
    return tr;
  }

  function render(w) {
    const state = document.getElementById("worker-state");
    if (state) {
      const shown = w.quarantined ? "quarantined" : w.state;
      state.textContent = shown;
      state.className = "state state-" + shown;
    }
    fact("pause_reason", w.pause_reason || "—");
    fact("last_seen", when(w.last_seen));
    fact("speed_pi", count(w.speed_pi) + " samples/s (measured over " + w.observations_pi + " chunk(s); calibrated " +
      count(w.pi_samples_per_s) + ")");
    fact("speed_mandelbrot", count(w.speed_mandelbrot) + " iterations/s (measured over " + w.observations_mandelbrot +
      " chunk(s); calibrated " + count(w.mandelbrot_iters_per_s) + ")");
    fact("reliability", percent(w.reliability) + " (" + count(w.ok) + " accepted, " + count(w.failed) + " failed, " +
      count(w.expired) + " expired leases)");
    fact("audit", w.audit_status.text + "; " + w.audit_status.failed_audits + " failed");
    const body = document.getElementById("recent-chunks-body");
    if (body && w.recent_chunks.length) body.replaceChildren(...w.recent_chunks.map(chunkRow));
  }

  async function tick() {
    if (!document.hidden) {
      try {
        const response = await fetch(root + "/api/workers/" + encodeURIComponent(workerId),
          { headers: { Accept: "application/json" } });
        if (response.status === 404) { // pruned meanwhile: say so and stop
          const state = document.getElementById("worker-state");
          if (state) {
            state.textContent = "pruned";
            state.className = "state state-offline";
          }
          return;
        }
        if (response.ok) render(await response.json());
      } catch (err) {
        // the next tick tries again
      }
    }
    window.setTimeout(tick, POLL_MS);
  }

  window.setTimeout(tick, POLL_MS);
})();
