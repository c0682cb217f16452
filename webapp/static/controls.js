// The dashboard's controls: the operator's job forms (submit, cancel, delete) and the viewer's own
// row on the leaderboard.
//
// * The operator token is typed once into the "Operator token" field and kept in this tab's
//   sessionStorage; it is sent only as "Authorization: Bearer <token>" to the JSON API, never in a
//   URL or a cookie. Errors from the API are shown as the API words them.
// * `hydra dashboard` opens the page as /#me=<account>: a URL fragment never reaches the server.
//   The account is remembered in localStorage and its leaderboard row gets the class "me".
// Everything is written with textContent, never innerHTML.
"use strict";

(function () {
  const root = document.body.dataset.root || "";
  const TOKEN_KEY = "hydra.operatorToken";
  const ME_KEY = "hydra.me";
  const FLASH_KEY = "hydra.flash";
  const ACCOUNT_RE = /^[0-9a-f]{64}$/;

  function store(storage, key, value) {
    try {
      if (value) storage.setItem(key, value);
      else storage.removeItem(key);
    } catch (err) {
      // storage disabled (private mode, policy): the value lives as long as the page
    }
  }

  function read(storage, key) {
    try {
      return storage.getItem(key) || "";
    } catch (err) {
      return "";
    }
  }

  // --- the operator token -------------------------------------------------------------------
  const tokenInput = document.getElementById("operator-token");
  const tokenStatus = document.getElementById("operator-status");
  let token = read(window.sessionStorage, TOKEN_KEY);

  function showTokenState(problem) {
    if (!tokenStatus) return;
    if (problem) {
      tokenStatus.textContent = problem;
      tokenStatus.className = "operator-status operator-missing";
    } else if (token) {
      tokenStatus.textContent = "operator token set for this tab";
      tokenStatus.className = "operator-status operator-set";
    } else {
      tokenStatus.textContent = "operator token needed";
      tokenStatus.className = "operator-status operator-missing";
    }
  }

  if (tokenInput) {
    tokenInput.value = token;
    tokenInput.addEventListener("input", () => {
      token = tokenInput.value.trim();
      store(window.sessionStorage, TOKEN_KEY, token);
      showTokenState();
    });
    const forget = document.getElementById("operator-forget");
    if (forget) {
      forget.addEventListener("click", () => {
        token = "";
        tokenInput.value = "";
        store(window.sessionStorage, TOKEN_KEY, "");
        showTokenState();
      });
    }
    showTokenState();
  }

  // A request to the API as the operator; throws an Error carrying the API's own message.
  async function operatorCall(method, path, body) {
    if (!token) {
      showTokenState("operator token needed");
      if (tokenInput) tokenInput.focus();
      throw new Error("Operator token needed: paste it into the Operator token field first.");
    }
    const headers = { Accept: "application/json", Authorization: "Bearer " + token };
    const init = { method: method, headers: headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(root + path, init);
    } catch (err) {
      throw new Error("The webapp did not answer (" + err.message + "); try again.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401) showTokenState("operator token wrong or missing");
      const message = data && typeof data.error === "string" ? data.error : "HTTP " + response.status;
      throw new Error(message);
    }
    return data;
  }

  function say(node, text, ok) {
    if (!node) return;
    node.hidden = false;
    node.textContent = text;
    node.className = node.className.replace(/\s*\b(ok|error)\b/g, "") + (ok ? " ok" : " error");
  }

  // --- a message carried over a page change (after a delete) ---------------------------------
  const flash = document.getElementById("flash");
  const carried = read(window.sessionStorage, FLASH_KEY);
  if (flash && carried) {
    say(flash, carried, true);
    store(window.sessionStorage, FLASH_KEY, "");
  }

  // --- submit a job (index page) --------------------------------------------------------------
  // A field's value as a JSON number when it is one (1e8, 0.5), else the text as typed, so the API
  // says what is wrong with it (also a whole number too long for a JavaScript number); "" when empty.
  function valueOf(form, name) {
    const field = form.elements.namedItem(name);
    const text = field ? String(field.value).trim() : "";
    if (text === "") return "";
    // Only decimal notation counts as a number: Number() would also read "0x10" as 16 and "0b11" as 3.
    if (!/^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/.test(text)) return text;
    const number = Number(text);
    if (/^-?[0-9]+$/.test(text) && !Number.isSafeInteger(number)) return text; // would lose digits: let the API say so
    return Number.isFinite(number) ? number : text;
  }

  function jobSpec(form) {
    const kind = form.elements.namedItem("kind").value;
    const names = kind === "pi" ? ["samples", "seed"] : ["width", "height", "max_iter", "center_x", "center_y", "span"];
    const params = {};
    for (const name of names) {
      const value = valueOf(form, name);
      if (value !== "") params[name] = value;
    }
    const spec = { kind: kind, params: params };
    const priority = valueOf(form, "priority");
    if (priority !== "") spec.priority = priority;
    const deadline = valueOf(form, "deadline");
    if (deadline !== "") spec.deadline = typeof deadline === "number" ? deadline : String(deadline);
    const weight = valueOf(form, "delay_weight");
    if (weight !== "") spec.delay_weight = weight;  // a number; a non-number reaches the API and is explained
    return spec;
  }

  function showKindFields(form) {
    const kind = form.elements.namedItem("kind").value;
    for (const set of form.querySelectorAll("fieldset[data-kind]")) {
      set.hidden = set.dataset.kind !== kind;
      set.disabled = set.hidden;
    }
  }

  const submitForm = document.getElementById("submit-form");
  if (submitForm) {
    const result = document.getElementById("submit-result");
    const button = document.getElementById("submit-job");
    submitForm.elements.namedItem("kind").addEventListener("change", () => showKindFields(submitForm));
    showKindFields(submitForm);
    submitForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      try {
        const job = await operatorCall("POST", "/api/jobs", jobSpec(submitForm));
        result.replaceChildren();
        result.append("Submitted ");
        const link = document.createElement("a");
        link.href = root + "/jobs/" + encodeURIComponent(job.id);
        link.textContent = job.kind + " job " + job.id;
        link.id = "submitted-job";
        link.dataset.jobId = job.id;
        result.append(link, "; it appears in the list above.");
        result.className = "result-line ok";
      } catch (err) {
        say(result, "Not submitted: " + err.message, false);
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- remove old finished jobs (index page) -------------------------------------------------
  // The first click lists what would go (a dry run); a second click within 10 s removes it, one
  // bounded request after another while the API says there is more.
  const pruneForm = document.getElementById("prune-form");
  if (pruneForm) {
    const result = document.getElementById("prune-result");
    const button = document.getElementById("prune-jobs");
    let armed = null; // {days, until}
    const disarm = () => {
      armed = null;
      button.textContent = "Remove old jobs";
    };
    pruneForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const days = valueOf(pruneForm, "days");
      if (typeof days !== "number" || !(days >= 0)) {
        say(result, "Not removed: type the age in days as a number, 0 or more (e.g. 30).", false);
        return;
      }
      const body = { older_than_s: days * 86400 };
      button.disabled = true;
      try {
        if (!armed || armed.days !== days || Date.now() > armed.until) {
          const preview = await operatorCall("POST", "/api/prune_jobs", Object.assign({ dry_run: true }, body));
          const n = preview.jobs.length + (preview.more ? "+" : "");
          if (preview.jobs.length === 0) {
            say(result, "No finished job ended more than " + days + " days ago.", true);
            disarm();
            return;
          }
          say(result, n + " finished job(s) ended more than " + days + " days ago. Click again within 10 s to " +
              "remove them for good (the token ledger keeps their mints).", true);
          armed = { days: days, until: Date.now() + 10000 };
          button.textContent = "Click again to remove " + n + " job(s)";
          window.setTimeout(() => { if (armed && Date.now() >= armed.until) disarm(); }, 10100);
          return;
        }
        disarm();
        let removed = 0;
        for (let round = 0; round < 1000; round++) {
          const reply = await operatorCall("POST", "/api/prune_jobs", body);
          removed += reply.jobs.length;
          if (!reply.more || reply.jobs.length === 0) break;
        }
        store(window.sessionStorage, FLASH_KEY, "Removed " + removed + " finished job(s) that ended more than " +
              days + " days ago.");
        window.location.reload();
      } catch (err) {
        say(result, "Not removed: " + err.message, false);
        disarm();
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- cancel or delete a job (job page) ------------------------------------------------------
  const jobControls = document.getElementById("job-controls");
  if (jobControls) {
    const jobId = jobControls.dataset.jobId;
    const result = document.getElementById("job-action-result");
    const cancel = document.getElementById("cancel-job");
    const del = document.getElementById("delete-job");
    let armedUntil = 0;
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        const job = await operatorCall("POST", "/api/jobs/" + encodeURIComponent(jobId) + "/cancel");
        say(result, "Job " + job.id + " is " + job.state + ".", true);
        window.location.reload(); // the server renders the final state (and the delete button)
      } catch (err) {
        say(result, "Not cancelled: " + err.message, false);
        cancel.disabled = false;
      }
    });
    del.addEventListener("click", async () => {
      if (Date.now() > armedUntil) { // a second click within 5 s confirms: deleting cannot be undone
        armedUntil = Date.now() + 5000;
        del.textContent = "Click again to delete for good";
        window.setTimeout(() => {
          if (Date.now() >= armedUntil) del.textContent = "Delete job";
        }, 5100);
        return;
      }
      armedUntil = 0;
      del.disabled = true;
      try {
        await operatorCall("DELETE", "/api/jobs/" + encodeURIComponent(jobId));
        store(window.sessionStorage, FLASH_KEY, "Job " + jobId + " deleted.");
        window.location.assign(root + "/");
      } catch (err) {
        say(result, "Not deleted: " + err.message, false);
        del.disabled = false;
        del.textContent = "Delete job";
      }
    });
  }

  // --- the viewer's own leaderboard row -------------------------------------------------------
  const board = document.getElementById("leaderboard-body");
  let me = "";
  let scrollPending = false;

  function markMine() {
    if (!board) return;
    for (const row of board.querySelectorAll("tr[data-account]")) {
      const mine = me !== "" && row.dataset.account === me;
      row.classList.toggle("me", mine);
      if (mine) {
        row.title = "you";
        if (scrollPending) {
          row.scrollIntoView({ block: "center" });
          scrollPending = false;
        }
      }
    }
  }

  function readMe() { // #me=<account> (from `hydra dashboard`) wins, and is remembered; else the remembered one
    const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const claimed = (fragment.get("me") || "").toLowerCase();
    if (ACCOUNT_RE.test(claimed)) {
      store(window.localStorage, ME_KEY, claimed);
      scrollPending = claimed !== me;
      me = claimed;
    } else {
      const remembered = read(window.localStorage, ME_KEY);
      me = ACCOUNT_RE.test(remembered) ? remembered : "";
    }
    markMine();
  }

  if (board) {
    readMe();
    window.addEventListener("hashchange", readMe);
    new MutationObserver(markMine).observe(board, { childList: true }); // app.js re-renders the rows
  }
})();
