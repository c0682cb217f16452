// Keeps the Hydra dashboard live: updates pushed by the server (Server-Sent Events, GET /api/events),
// or, where streams are refused or not supported, polling the JSON API once a second.
// Job and worker data are written with textContent only (never innerHTML), so nothing a
// volunteer or a job can put into Redis is ever interpreted as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const WORKERS_EVERY = 5; // poll /api/workers on every 5th tick
  const FINAL = new Set(["done", "failed", "cancelled"]);
  const root = document.body.dataset.root || "";

  // --- formatting (mirrors the Jinja filters in pages.py) --------------------------------
  const formats = {
    count: (v) => (typeof v === "number" ? Math.round(v).toLocaleString("en-US") : "—"),
    percent: (v) => (typeof v === "number" ? (100 * v).toFixed(1) + "%" : "—"),
    seconds: (v) => (typeof v === "number" ? v.toFixed(2) + " s" : "—"),
    when: (v) => (v ? new Date(v * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "—"),
  };

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function cell(text, className) {
    return el("td", text, className);
  }

  function stateBadge(state) {
    return el("span", state, "state state-" + state);
  }

  function progressCell(fraction) {
    const td = el("td");
    const bar = el("progress");
    bar.max = 1;
    bar.value = fraction;
    td.append(bar, " ", el("span", formats.percent(fraction), "pct"));
    return td;
  }

  function emptyRow(colspan, text) {
    const tr = el("tr", undefined, "empty");
    const td = cell(text);
    td.colSpan = colspan;
    tr.append(td);
    return tr;
  }

  // --- live status line: "live" (pushed over SSE), "polling" (the fallback), or a problem ---------------
  const live = document.getElementById("live");

  function showLive(mode, text) {
    if (!live) return;
    live.hidden = false;
    live.textContent = text;
    live.dataset.mode = mode;
    live.className = mode === "error" ? "live live-error" : "live live-" + mode;
    live.title = mode === "live" ? "updates pushed by the server (Server-Sent Events)"
      : mode === "polling" ? "live updates are not available here: asking the server every second" : "";
  }

  // Other scripts (controls.js, charts.js) hear about every update: document "hydra:update" events
  // with detail {topic, data}; topic is "jobs", "workers", "tokens" or "job".
  function announce(topic, data) {
    document.dispatchEvent(new CustomEvent("hydra:update", { detail: { topic: topic, data: data } }));
  }

  async function getJSON(path) {
    const response = await fetch(root + path, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.error === "string" ? body.error : "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // Live updates: Server-Sent Events (GET /api/events) where the browser and server allow them,
  // else polling the JSON API once a second; a refused or failing stream falls back to polling
  // and the stream is tried again every SSE_RETRY_MS.
  const SSE_RETRY_MS = 30000;
  // A tab hidden this long gives its stream back (the server serves a bounded number of them) and
  // opens a new one when it is shown again; the new stream starts with the full state.
  const HIDDEN_CLOSE_MS = 60000;

  function keepLive(query, handlers, tick) {
    let source = null;
    let polling = false;
    let failures = 0;
    let stopped = false;
    let retryTimer = null;
    let hiddenTimer = null;
    let parked = false; // the stream was given back while the tab was hidden

    function stop() {
      stopped = true;
      polling = false;
      if (source) source.close();
      if (retryTimer) window.clearTimeout(retryTimer);
    }

    function handle(topic, data) {
      if (handlers[topic](data) === false) {
        stop();
        if (live) live.hidden = true;
      }
      announce(topic, data);
    }

    function startPolling() {
      if (polling || stopped) return;
      polling = true;
      showLive("polling", "polling");
      let n = 0;
      async function loop() {
        if (!polling) return;
        if (!document.hidden) {
          try {
            const results = await tick(n++);
            if (!polling) return;
            for (const [topic, data] of results) handle(topic, data);
            if (!stopped && polling) showLive("polling", "polling");
          } catch (err) {
            showLive("error", "not updating: " + err.message);
          }
        }
        if (polling) window.setTimeout(loop, POLL_MS);
      }
      window.setTimeout(loop, POLL_MS);
    }

    function fallBack() {
      if (source) source.close();
      source = null;
      startPolling();
      if (!stopped) retryTimer = window.setTimeout(startStream, SSE_RETRY_MS);
    }

    function startStream() {
      retryTimer = null;
      parked = false;
      if (stopped) return;
      if (source) source.close(); // never two streams at once
      if (!window.EventSource) {
        startPolling();
        return;
      }
      failures = 0;
      const es = new EventSource(root + "/api/events?" + query);
      source = es;
      let planned = false; // the server ended the stream at its lifetime ("bye"): it reconnects by itself
      es.onopen = () => {
        failures = 0;
        polling = false; // a stream is up: stop polling
        showLive("live", "live");
      };
      for (const topic of Object.keys(handlers)) {
        es.addEventListener(topic, (event) => {
          failures = 0;
          handle(topic, JSON.parse(event.data));
        });
      }
      es.addEventListener("bye", () => { planned = true; });
      es.addEventListener("problem", (event) => {
        showLive("error", "not updating: " + JSON.parse(event.data).error);
      });
      es.onerror = () => {
        if (stopped || es !== source) return; // stopped, or a stream already replaced
        if (planned) { // expected: EventSource reconnects after the stream's retry delay
          planned = false;
          return;
        }
        failures += 1;
        // CLOSED: the server refused the stream (e.g. 503, too many streams); three failed
        // reconnections in a row: something between us and the server does not pass streams.
        if (es.readyState === EventSource.CLOSED || failures >= 3) fallBack();
        else showLive("error", "reconnecting…");
      };
    }

    // Leaving the page (it may stay in the back/forward cache) gives the stream back at once.
    window.addEventListener("pagehide", () => {
      if (source && !stopped) {
        source.close();
        source = null;
        parked = true;
      }
    });
    window.addEventListener("pageshow", (event) => {
      if (event.persisted && parked && !stopped) startStream();
    });

    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        hiddenTimer = window.setTimeout(() => {
          if (source && !stopped) {
            source.close();
            source = null;
            parked = true;
          }
        }, Number(document.body.dataset.hiddenCloseMs) || HIDDEN_CLOSE_MS); // (tests shorten it)
      } else {
        window.clearTimeout(hiddenTimer);
        if (parked && !stopped) {
          parked = false;
          startStream();
        }
      }
    });

    startStream();
  }

  // --- the job list ----------------------------------------------------------------------
  function jobRow(job) {
    const tr = el("tr");
    const link = el("a");
    link.href = root + "/jobs/" + encodeURIComponent(job.id);
    link.append(el("code", job.id));
    const id = el("td");
    id.append(link);
    const state = el("td");
    state.append(stateBadge(job.state));
    if (job.suspect) { // results from a worker caught cheating later: re-open the job to recompute them
      const flag = stateBadge("suspect");
      flag.title = job.suspect + " result(s) from a worker caught cheating; hydra reopen " + job.id;
      state.append(" ", flag);
    }
    tr.append(
      id,
      cell(job.kind),
      state,
      cell(String(job.priority), "num"),
      progressCell(job.progress),
      cell(formats.count(job.chunks_done) + " / " + formats.count(job.chunks_total), "num"),
      cell(formats.when(job.created_at)),
      cell(formats.seconds(job.wall_s), "num"),
    );
    return tr;
  }

  function workerRow(w) {
    const tr = el("tr", undefined, w.state === "offline" ? "worker-offline" : undefined);
    const id = el("td");
    const page = el("a"); // the worker's own page (controls.js / worker.html)
    page.href = root + "/workers/" + encodeURIComponent(w.worker_id);
    page.append(el("code", w.worker_id));
    id.append(page);
    const state = el("td");
    state.append(stateBadge(w.quarantined ? "quarantined" : w.state));
    if (w.quarantined) state.title = w.quarantined; // why: the spot check it failed
    tr.append(
      id,
      cell(w.region),
      cell(w.host),
      state,
      cell(formats.when(w.last_seen)),
      speedCell(w),
      cell(w.isa || "?"),
      cell(formats.count(w.chunks_done), "num"),
      cell(String(w.reputation ?? 0), "num"),
      cell(((w.audit_share_pi ?? 0) * 100).toFixed(1) + "%", "num"),
    );
    return tr;
  }

  function speedCell(w) { // the measured speed scheduling uses, not the start-up calibration
    const td = cell(formats.count(w.speed_pi ?? w.pi_samples_per_s), "num");
    td.title = "measured over " + (w.observations_pi ?? 0) + " chunk(s); calibrated at start: " +
      formats.count(w.pi_samples_per_s);
    return td;
  }

  function leaderRow(row) { // display name (else the key's prefix) and team; controls.js highlights data-account
    const tr = el("tr");
    tr.dataset.account = row.account;
    const account = el("td");
    account.title = row.account;
    account.append(row.display_name ? row.display_name : el("code", row.shown || row.account.slice(0, 16) + "…"));
    tr.append(cell(String(row.rank), "num"), account, cell(row.team || ""), cell(row.tokens, "num"));
    return tr;
  }

  function teamRow(row) {
    const tr = el("tr");
    tr.append(cell(String(row.rank), "num"), cell(row.team), cell(String(row.members), "num"), cell(row.tokens, "num"));
    return tr;
  }

  function renderTokens(board, metrics) {
    document.getElementById("leaderboard-body").replaceChildren(
      ...(board.by_balance.length
        ? board.by_balance.map(leaderRow)
        : [emptyRow(4, "No tokens yet: volunteers earn them for every accepted chunk.")]),
    );
    const teams = document.getElementById("teams-body");
    if (teams && board.by_team) {
      teams.replaceChildren(...(board.by_team.length ? board.by_team.map(teamRow) : [emptyRow(4, "No teams yet.")]));
    }
    document.getElementById("token-supply").textContent = metrics.supply;
    document.getElementById("token-accounts").textContent = String(metrics.accounts);
    document.getElementById("token-mints").textContent = String(metrics.mints);
    document.getElementById("token-transfers").textContent = String(metrics.transfers);
  }

  function startIndex() {
    const jobsBody = document.getElementById("jobs-body");
    const workersBody = document.getElementById("workers-body");
    const handlers = {
      jobs: (data) => {
        jobsBody.replaceChildren(
          ...(data.jobs.length
            ? data.jobs.map(jobRow)
            : [emptyRow(8, "No jobs yet. Submit one with hydra submit pi or POST /api/jobs.")]),
        );
      },
      workers: (data) => {
        workersBody.replaceChildren(
          ...(data.workers.length
            ? data.workers.map(workerRow)
            : [emptyRow(10, "No workers registered. Start one with hydra worker --region REGION.")]),
        );
      },
      tokens: (data) => renderTokens(data.leaderboard, data.token_metrics),
    };
    keepLive("topics=jobs,workers,tokens", handlers, async (n) => {
      const results = [["jobs", await getJSON("/api/jobs?limit=50")]];
      if (n % WORKERS_EVERY === 0) {
        const [workers, board, metrics] = await Promise.all([
          getJSON("/api/workers"), getJSON("/api/leaderboard?limit=10"), getJSON("/api/token_metrics")]);
        results.push(["workers", workers], ["tokens", { leaderboard: board, token_metrics: metrics }]);
      }
      return results;
    });
  }

  // --- one job -----------------------------------------------------------------------------
  function jobWorkerRow(workerId, w) {
    const tr = el("tr");
    const id = el("td");
    const page = el("a"); // the worker's own page
    page.href = root + "/workers/" + encodeURIComponent(workerId);
    page.append(el("code", workerId));
    id.append(page);
    tr.append(
      id,
      cell(formats.count(w.chunks), "num"),
      cell(formats.count(w.units), "num"),
      cell(formats.seconds((w.elapsed_ms || 0) / 1000), "num"),
    );
    return tr;
  }

  function startJob() {
    const idNode = document.getElementById("job-id");
    if (!idNode || idNode.dataset.final === "true") return; // a finished job does not change
    const jobId = idNode.dataset.jobId;
    const stateNode = document.getElementById("job-state");
    const bar = document.getElementById("job-progress");
    const workersBody = document.getElementById("job-workers-body");
    const liveImage = document.getElementById("live-image"); // a running Mandelbrot job's image so far
    let shownChunks = -1;
    let reloading = false;
    function showJob(job) {
      if (job.gone) {
        showLive("error", "this job was deleted");
        return false;
      }
      if (FINAL.has(job.state)) {
        // The server renders the result (π estimate or image) exactly; reload once to show it.
        if (!reloading) window.location.reload();
        reloading = true;
        return false;
      }
      stateNode.textContent = job.state;
      stateNode.className = "state state-" + job.state;
      if (liveImage && job.chunks_done !== shownChunks) { // a tile (or the preview) arrived: redraw
        shownChunks = job.chunks_done;
        liveImage.src = liveImage.src.split("?")[0] + "?chunks=" + shownChunks;
      }
      bar.value = job.progress;
      for (const node of document.querySelectorAll("[data-field]")) {
        const format = formats[node.dataset.format] || String;
        node.textContent = format(job[node.dataset.field]);
      }
      const workers = Object.entries(job.workers || {}).sort((a, b) => (a[0] < b[0] ? -1 : 1));
      if (workers.length) {
        workersBody.replaceChildren(...workers.map(([id, w]) => jobWorkerRow(id, w)));
      }
      return true;
    }
    keepLive("topics=job&job=" + encodeURIComponent(jobId), { job: showJob },
      async () => [["job", await getJSON("/api/jobs/" + encodeURIComponent(jobId))]]);
  }

  const page = document.body.dataset.page;
  if (page === "index") startIndex();
  if (page === "job") startJob();
})();
