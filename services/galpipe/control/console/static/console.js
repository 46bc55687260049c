// The galpipe control console: vanilla JavaScript against the JSON API of the same origin.
//
// What it must never do with the operator's token: put it in a URL, in storage, in the page or
// in a log. The token is read from the login field, the field is cleared at once, and the token
// goes in one POST body; from then on the HttpOnly session cookie (which scripts cannot read)
// stands in for it. The CSRF token of the session comes from /whoami and lives only in a
// variable of this page; every state-changing request sends it as X-CSRF-Token.
//
// All text from the API is put into the page with textContent, never parsed as HTML.
"use strict";

(() => {
  const API = "/api/v1";
  const CSRF_HEADER = "X-CSRF-Token";
  // The verb of pipelines.galpipe.io each action needs (the server's VERB_OF), to say plainly
  // what a 403 refused.
  const VERB_OF = {
    overview: "get", audit: "list", pause: "pause", resume: "pause", hold: "scale",
    release_hold: "scale", restart: "restart", pin: "rollback", unpin: "rollback",
    retry: "retry", requeue: "requeue",
  };
  const REFRESH_MS = 15000;

  let csrfToken = null;

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  // -- small DOM helpers ----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function showMessage(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    let s = Math.max(0, Math.round(seconds));
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= size) {
        parts.push(`${Math.floor(s / size)}${unit}`);
        s %= size;
      }
    }
    if (parts.length < 2) parts.push(`${s}s`);
    return parts.slice(0, 2).join(" ");
  }

  function fmtNumber(value, digits = 0) {
    if (value === null || value === undefined) return "—";
    return Number(value).toLocaleString("en", { maximumFractionDigits: digits });
  }

  // -- the API ----------------------------------------------------------------------------------

  function detailOf(payload) {
    if (!payload) return "";
    const { detail } = payload;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((e) => `${(e.loc || []).slice(1).join(".") || "input"}: ${e.msg}`).join("; ");
    }
    return "";
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && csrfToken) headers[CSRF_HEADER] = csrfToken;
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, "the control service could not be reached");
    }
    if (response.status === 204) return null;
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, detailOf(payload) || response.statusText || "error");
    }
    return payload;
  }

  // What went wrong, in words an operator acts on.
  function describe(err, action, pipeline) {
    if (!(err instanceof ApiError)) return `unexpected error: ${err}`;
    const verb = VERB_OF[action] || action;
    const target = pipeline || "pipelines";
    switch (err.status) {
      case 0:
        return err.detail;
      case 401:
        return "your session has ended: sign in again";
      case 403:
        if (err.detail && err.detail.startsWith("cross-site")) return `refused: ${err.detail}`;
        if (err.detail && err.detail.includes(CSRF_HEADER)) {
          return `refused: ${err.detail} (reload the page)`;
        }
        return `you may not ${verb} ${target} (${err.detail})`;
      case 429:
        return err.detail;
      default:
        return `${action ? `${action.replace("_", " ")} of ${target} failed` : "failed"}: ${err.detail}`;
    }
  }

  function toLogin() {
    window.location.replace("/login");
  }

  // -- header: who is logged in, log out, overrides banner ----------------------------------------

  async function startSession() {
    let me;
    try {
      me = await api("GET", "/whoami");
    } catch (err) {
      if (err.status === 401) {
        toLogin();
        return null;
      }
      throw err;
    }
    csrfToken = me.csrf_token || null;
    const who = document.getElementById("whoami");
    who.replaceChildren(
      "Signed in as ",
      el("strong", { text: me.user }),
      me.groups && me.groups.length
        ? el("span", { class: "groups", text: ` (${me.groups.join(", ")})` })
        : null,
    );
    document.getElementById("logout").addEventListener("click", logout);
    return me;
  }

  async function logout() {
    try {
      await api("DELETE", "/session");
    } catch (err) {
      if (err.status !== 401) {
        showMessage(document.getElementById("page-error"), describe(err, "", ""));
        return;
      }
    }
    csrfToken = null;
    toLogin();
  }

  function overrideText(o) {
    const who = o.user ? ` by ${o.user}` : "";
    const when = [o.since ? `since ${fmtTime(o.since)}` : "", o.reason ? `“${o.reason}”` : ""];
    const detail = when.filter(Boolean).join(" — ");
    const tail = detail ? ` (${detail})` : "";
    if (o.kind === "pin") {
      return `${o.pipeline}: image ${o.value || "?"} pinned${who}: GitOps suspended until released${tail}`;
    }
    if (o.kind === "hold") {
      return `${o.pipeline}: replicas held at ${o.value}${who}: the autoscaler is bypassed until released${tail}`;
    }
    if (o.kind === "pause") {
      return `${o.pipeline}: paused${who}: workers claim nothing until resumed${tail}`;
    }
    return `${o.pipeline}: ${o.kind}${who}${tail}`;
  }

  function renderBanner(overview) {
    const banner = document.getElementById("overrides");
    const items = overview.overrides.map((o) =>
      el("li", { class: o.kind, "data-kind": o.kind, "data-pipeline": o.pipeline, text: overrideText(o) }),
    );
    const pinned = overview.overrides.some((o) => o.kind === "pin");
    if (overview.helm_release_suspended && !pinned) {
      items.push(
        el("li", {
          class: "pin",
          text: `HelmRelease ${overview.helm_release} is suspended: GitOps is not applying Git's changes until it is resumed`,
        }),
      );
    }
    if (overview.kube_error) {
      items.push(el("li", { text: `Kubernetes could not be read fully: ${overview.kube_error}` }));
    }
    banner.replaceChildren(
      ...(items.length
        ? [el("h2", { text: items.length === 1 ? "Override in place" : "Overrides in place" }), el("ul", {}, items)]
        : []),
    );
    banner.hidden = items.length === 0;
  }

  // -- pipelines page -------------------------------------------------------------------------------

  const cards = new Map();

  function badge(text, tone) {
    return el("span", { class: `badge ${tone}`, text });
  }

  function queueTable(p) {
    const counts = p.counts || {};
    const states = ["queued", "running", "done", "failed", "skipped"];
    return el(
      "table",
      { class: "queue" },
      el("caption", { class: "visually-hidden", text: `Queue of ${p.pipeline}` }),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          states.map((s) => el("th", { scope: "col", class: "num", text: s })),
          el("th", { scope: "col", class: "num", text: "oldest queued" }),
          el("th", { scope: "col", class: "num", text: "done / s" }),
        ),
      ),
      el(
        "tbody",
        {},
        el(
          "tr",
          {},
          states.map((s) =>
            el("td", { class: "num", "data-state": s, text: fmtNumber(counts[s] || 0) }),
          ),
          el("td", { class: "num", text: fmtAge(p.oldest_queued_seconds) }),
          el("td", { class: "num", text: fmtNumber(p.rate_per_second, 2) }),
        ),
      ),
    );
  }

  function facts(rows) {
    return el(
      "dl",
      { class: "facts" },
      rows.filter(Boolean).map(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)]),
    );
  }

  function breakerText(b) {
    if (!b) return "none recorded";
    let text = `${b.state}`;
    if (b.consecutive_failures) text += `, ${b.consecutive_failures} consecutive failures`;
    if (b.opened_at && b.state !== "closed") text += `, opened ${fmtTime(b.opened_at)}`;
    if (b.last_error) text += ` — last error: ${b.last_error}`;
    return text;
  }

  function rateLimitText(r) {
    if (!r) return "none";
    const waiting = r.tokens < 0 ? `, ${fmtNumber(-r.tokens)} waiting` : "";
    return `${fmtNumber(r.rate, 2)}/s, burst ${fmtNumber(r.burst)}, ${fmtNumber(r.tokens, 1)} tokens left${waiting}`;
  }

  function podsTable(p) {
    if (!p.pods || p.pods.length === 0) return el("p", { class: "hint", text: "No pods." });
    return el(
      "table",
      { class: "pods" },
      el("caption", { class: "visually-hidden", text: `Pods of ${p.pipeline}` }),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "col", text: "pod" }),
          el("th", { scope: "col", text: "phase" }),
          el("th", { scope: "col", text: "ready" }),
          el("th", { scope: "col", class: "num", text: "restarts" }),
        ),
      ),
      el(
        "tbody",
        {},
        p.pods.map((pod) =>
          el(
            "tr",
            {},
            el("td", { class: "mono", text: pod.name }),
            el("td", { text: pod.phase }),
            el("td", {}, pod.ready ? badge("ready", "ok") : badge("not ready", "bad")),
            el("td", { class: "num", text: fmtNumber(pod.restarts) }),
          ),
        ),
      ),
    );
  }

  function pipelineFacts(p) {
    const imageDiffers = p.image && p.image_wanted && p.image !== p.image_wanted;
    const replicas =
      p.replicas_desired === null ? "unknown" : `${p.replicas_desired} desired, ${p.replicas_ready} ready`;
    return [
      el("h3", { text: "Queue" }),
      queueTable(p),
      el("h3", { text: "Workload" }),
      facts([
        ["Paused", p.paused ? `yes, since ${fmtTime(p.paused_since)}${p.pause_reason ? ` — “${p.pause_reason}”` : ""}` : "no"],
        ["Replicas", replicas],
        ["Hold", p.hold_replicas === null ? "none (the autoscaler decides)" : `held at ${p.hold_replicas}`],
        ["Breaker", breakerText(p.breaker)],
        ["Rate limit", rateLimitText(p.rate_limit)],
        ["Image running", el("span", { class: "mono", text: p.image || "unknown" })],
        [
          "Image Git wants",
          el(
            "span",
            {},
            el("span", { class: "mono", text: p.image_wanted || "unknown" }),
            imageDiffers ? el("span", { class: "differs", text: p.pinned ? " (pinned away from it)" : " (differs)" }) : null,
          ),
        ],
      ]),
      el("h3", { text: "Pods" }),
      podsTable(p),
    ];
  }

  function badges(p) {
    const list = [];
    if (p.paused) list.push(badge("paused", "warn"));
    if (p.hold_replicas !== null) list.push(badge(`held at ${p.hold_replicas}`, "warn"));
    if (p.pinned) list.push(badge("image pinned", "warn"));
    if (p.breaker && p.breaker.state !== "closed") list.push(badge(`breaker ${p.breaker.state}`, "bad"));
    if (list.length === 0) list.push(badge("running normally", "ok"));
    return list;
  }

  // The control form of one pipeline: built once, so what an operator typed survives refreshes.
  function buildCard(name) {
    const id = (suffix) => `${name}-${suffix}`;
    const card = { name, state: null, busy: false, pending: null };
    const actionButton = (action, label, extra) =>
      el("button", { type: "button", "data-action": action, class: extra || "", text: label });

    card.title = el("h2", { id: id("title"), text: name });
    card.badges = el("span", { class: "badges" });
    card.facts = el("div", { class: "pipeline-facts" });
    card.reason = el("textarea", {
      id: id("reason"),
      rows: 2,
      maxlength: 1024,
      "aria-describedby": id("reason-help"),
      required: true,
    });
    card.replicas = el("input", { id: id("replicas"), type: "number", min: 0, max: 1000, step: 1, inputmode: "numeric" });
    card.image = el("input", { id: id("image"), type: "text", spellcheck: "false", autocomplete: "off" });
    card.errorFilter = el("input", { id: id("error-filter"), type: "text", spellcheck: "false", autocomplete: "off" });
    card.algoVersion = el("input", { id: id("algo-version"), type: "text", spellcheck: "false", autocomplete: "off" });
    card.buttons = {
      pause: actionButton("pause", "Pause"),
      resume: actionButton("resume", "Resume"),
      hold: actionButton("hold", "Hold"),
      release_hold: actionButton("release_hold", "Release hold", "quiet"),
      restart: actionButton("restart", "Restart pods"),
      pin: actionButton("pin", "Pin image"),
      unpin: actionButton("unpin", "Unpin: back to Git", "quiet"),
      retry: actionButton("retry", "Retry failed: count…"),
      requeue: actionButton("requeue", "Requeue: count…"),
    };
    card.confirm = el("div", { class: "confirm", role: "group", "aria-label": `Confirm on ${name}`, hidden: true });
    card.outcome = el("p", { class: "outcome", role: "status" });
    card.error = el("p", { class: "error", role: "alert" });

    const field = (input, label) =>
      el("div", { class: "field" }, el("label", { for: input.id, text: label }), input);
    const b = card.buttons;
    const controls = el(
      "fieldset",
      { class: "controls" },
      el("legend", { text: `Change ${name}` }),
      el("label", { for: card.reason.id, text: "Reason" }),
      el("p", {
        id: id("reason-help"),
        class: "hint",
        text: "Required for every change; recorded in the audit log and a Kubernetes Event.",
      }),
      card.reason,
      el("div", { class: "control-row" }, b.pause, b.resume, b.restart),
      el("div", { class: "control-row" }, field(card.replicas, "Replicas"), b.hold, b.release_hold),
      el("div", { class: "control-row" }, field(card.image, "Image"), b.pin, b.unpin),
      el("div", { class: "control-row" }, field(card.errorFilter, "Error contains (optional)"), b.retry),
      el("div", { class: "control-row" }, field(card.algoVersion, "New algo_version"), b.requeue),
      card.confirm,
      card.outcome,
      card.error,
    );

    card.root = el(
      "section",
      { class: "card pipeline", "aria-labelledby": id("title"), "data-pipeline": name },
      el("div", { class: "pipeline-head" }, card.title, card.badges),
      card.facts,
      controls,
    );

    for (const input of [card.reason, card.replicas, card.image, card.errorFilter, card.algoVersion]) {
      input.addEventListener("input", () => {
        // A changed filter or version invalidates a count shown for the old one.
        if (input !== card.reason) hideConfirm(card);
        updateControls(card);
      });
    }
    for (const [action, button] of Object.entries(b)) {
      button.addEventListener("click", () => onAction(card, action));
    }
    updateControls(card);
    return card;
  }

  function updateControls(card) {
    const reason = card.reason.value.trim() !== "";
    const s = card.state;
    const b = card.buttons;
    b.pause.hidden = Boolean(s && s.paused);
    b.resume.hidden = !(s && s.paused);
    b.release_hold.hidden = !(s && s.hold_replicas !== null);
    b.unpin.hidden = !(s && s.pinned);
    const replicasValid = card.replicas.value !== "" && card.replicas.checkValidity();
    const needs = {
      hold: replicasValid,
      pin: card.image.value.trim() !== "",
      requeue: card.algoVersion.value.trim() !== "",
    };
    for (const [action, button] of Object.entries(b)) {
      button.disabled = card.busy || !reason || needs[action] === false;
    }
    for (const button of card.confirm.querySelectorAll("button[data-confirm]")) {
      button.disabled = card.busy || !reason;
    }
  }

  function hideConfirm(card) {
    card.pending = null;
    card.confirm.hidden = true;
    card.confirm.replaceChildren();
  }

  function bodyOf(card, action, dryRun) {
    const body = { reason: card.reason.value.trim() };
    if (action === "hold") body.replicas = Number(card.replicas.value);
    if (action === "pin") body.image = card.image.value.trim();
    if (action === "retry") {
      const filter = card.errorFilter.value.trim();
      if (filter) body.error_contains = filter;
      body.dry_run = dryRun;
    }
    if (action === "requeue") {
      body.algo_version = card.algoVersion.value.trim();
      body.dry_run = dryRun;
    }
    return body;
  }

  function doneText(action, result) {
    const p = result.pipeline;
    const audit = result.audit_id ? ` (audit record ${result.audit_id})` : "";
    const texts = {
      pause: `Paused ${p}`,
      resume: `Resumed ${p}`,
      hold: `Holding ${p} at ${result.after ? result.after.paused_replicas : "the given number of"} replicas`,
      release_hold: `Released the hold on ${p}: the autoscaler decides again`,
      restart: `Restarting the pods of ${p}`,
      pin: `Pinned the image of ${p}: GitOps is suspended until you unpin`,
      unpin: `Unpinned ${p}: Git is in control again`,
      retry: `Queued ${result.count} failed tasks of ${p} again`,
      requeue: `Queued ${result.count} galaxies of ${p} for measurement again`,
    };
    return (texts[action] || `${action} of ${p} done`) + audit;
  }

  async function onAction(card, action, dryRunDone) {
    const counted = action === "retry" || action === "requeue";
    const dryRun = counted && !dryRunDone;
    showMessage(card.outcome, "");
    showMessage(card.error, "");
    const body = bodyOf(card, action, dryRun);
    card.busy = true;
    updateControls(card);
    const path = `/pipelines/${encodeURIComponent(card.name)}/${action.replace("_", "-")}`;
    try {
      const result = await api("POST", path, body);
      if (dryRun) {
        showCount(card, action, result.count);
      } else {
        hideConfirm(card);
        showMessage(card.outcome, doneText(action, result));
        card.reason.value = "";
        await refreshOverview();
      }
    } catch (err) {
      hideConfirm(card);
      showMessage(card.error, describe(err, action, card.name));
      if (err.status === 401) setTimeout(toLogin, 1500);
    } finally {
      card.busy = false;
      updateControls(card);
    }
  }

  // The dry run's count, and the button that does it for real.
  function showCount(card, action, count) {
    const what = action === "retry" ? "failed tasks" : "galaxies";
    const filter =
      action === "retry"
        ? card.errorFilter.value.trim()
          ? ` whose error contains “${card.errorFilter.value.trim()}”`
          : ""
        : ` under algo_version “${card.algoVersion.value.trim()}”`;
    card.pending = action;
    const children = [
      el("p", {
        text:
          count > 0
            ? `${count} ${what} of ${card.name}${filter} would be queued again.`
            : `No ${what} of ${card.name}${filter} to queue.`,
      }),
    ];
    if (count > 0) {
      children.push(
        el(
          "button",
          {
            type: "button",
            class: "danger",
            "data-confirm": action,
            onclick: () => onAction(card, action, true),
            text: action === "retry" ? `Retry ${count} tasks` : `Requeue ${count} galaxies`,
          },
        ),
        " ",
      );
    }
    children.push(el("button", { type: "button", class: "quiet", onclick: () => hideConfirm(card), text: "Cancel" }));
    card.confirm.replaceChildren(...children);
    card.confirm.hidden = false;
  }

  function renderPipelines(overview) {
    const container = document.getElementById("pipelines");
    const names = Object.keys(overview.pipelines);
    if (cards.size === 0) container.replaceChildren();
    for (const name of names) {
      let card = cards.get(name);
      if (!card) {
        card = buildCard(name);
        cards.set(name, card);
        container.append(card.root);
      }
      const p = overview.pipelines[name];
      card.state = p;
      card.badges.replaceChildren(...badges(p));
      card.facts.replaceChildren(...pipelineFacts(p));
      if (!card.image.placeholder && p.image_wanted) card.image.placeholder = p.image_wanted;
      updateControls(card);
    }
    if (names.length === 0) container.replaceChildren(el("p", { class: "hint", text: "No pipelines." }));
    container.setAttribute("aria-busy", "false");
    const countsLag = (Date.parse(overview.taken_at) - Date.parse(overview.counts_taken_at)) / 1000;
    document.getElementById("taken-at").textContent =
      countsLag >= 1
        ? `As of ${fmtTime(overview.taken_at)} (task counts ${fmtAge(countsLag)} older)`
        : `As of ${fmtTime(overview.taken_at)}`;
  }

  async function loadOverview() {
    const overview = await api("GET", "/overview");
    renderBanner(overview);
    return overview;
  }

  async function refreshOverview() {
    const pageError = document.getElementById("page-error");
    try {
      const overview = await loadOverview();
      if (document.body.dataset.page === "pipelines") renderPipelines(overview);
      showMessage(pageError, "");
      return overview;
    } catch (err) {
      if (err.status === 401) {
        toLogin();
        return null;
      }
      showMessage(pageError, describe(err, "overview", ""));
      return null;
    }
  }

  async function pipelinesPage() {
    if (!(await startSession())) return;
    await refreshOverview();
    document.getElementById("refresh").addEventListener("click", refreshOverview);
    setInterval(() => {
      if (!document.hidden && ![...cards.values()].some((c) => c.busy)) refreshOverview();
    }, REFRESH_MS);
  }

  // -- audit page ---------------------------------------------------------------------------------

  function auditRow(r) {
    const change = [];
    for (const [label, value] of [["target", r.target], ["before", r.before], ["after", r.after]]) {
      if (value !== null && value !== undefined && !(typeof value === "object" && Object.keys(value).length === 0)) {
        change.push(`${label}: ${JSON.stringify(value, null, 1)}`);
      }
    }
    return el(
      "tr",
      { "data-audit-id": r.id },
      el("td", { class: "mono", text: fmtTime(r.at) }),
      el("td", { title: (r.groups || []).join(", ") }, r.user),
      el("td", { text: r.action }),
      el("td", { text: r.pipeline || "—" }),
      el("td", { class: "reason", text: r.reason }),
      el(
        "td",
        {},
        el("span", { class: `result-${r.result}`, text: r.result.replace("_", " ") }),
        r.error ? el("div", { class: "error", text: r.error }) : null,
      ),
      el(
        "td",
        {},
        change.length
          ? el("details", {}, el("summary", { text: "details" }), el("pre", { text: change.join("\n") }))
          : "—",
      ),
    );
  }

  function filtersFromForm(form) {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form).entries()) {
      const text = String(value).trim();
      if (text && !(key === "limit" && text === "100")) params.set(key, text);
    }
    return params;
  }

  async function loadAudit(form) {
    const params = filtersFromForm(form);
    const summary = document.getElementById("audit-summary");
    const tbody = document.querySelector("#audit-table tbody");
    const query = params.toString();
    // The filter is in the address so that a view of the log can be shared; it holds no secret.
    window.history.replaceState(null, "", query ? `/audit?${query}` : "/audit");
    const apiParams = new URLSearchParams(params);
    if (!apiParams.has("limit")) apiParams.set("limit", "100");
    try {
      const records = await api("GET", `/audit?${apiParams}`);
      tbody.replaceChildren(...records.map(auditRow));
      const filtered = ["user", "action", "pipeline"].filter((k) => params.has(k));
      const qualifier = filtered.length
        ? ` matching ${filtered.map((k) => `${k} “${params.get(k)}”`).join(", ")}`
        : "";
      summary.textContent = records.length
        ? `${records.length} record${records.length === 1 ? "" : "s"}${qualifier}, newest first.`
        : `No audit records${qualifier}.`;
      showMessage(document.getElementById("page-error"), "");
    } catch (err) {
      if (err.status === 401) {
        toLogin();
        return;
      }
      tbody.replaceChildren();
      summary.textContent = "";
      showMessage(document.getElementById("page-error"), describe(err, "audit", ""));
    }
  }

  async function auditPage() {
    if (!(await startSession())) return;
    const form = document.getElementById("audit-filter");
    const initial = new URLSearchParams(window.location.search);
    for (const key of ["user", "action", "pipeline", "limit"]) {
      if (initial.has(key) && form.elements[key]) form.elements[key].value = initial.get(key);
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      loadAudit(form);
    });
    form.addEventListener("reset", () => setTimeout(() => loadAudit(form), 0));
    const overview = await refreshOverview();
    if (overview) {
      const list = document.getElementById("pipeline-names");
      list.replaceChildren(...Object.keys(overview.pipelines).map((n) => el("option", { value: n })));
    }
    await loadAudit(form);
  }

  // -- login page ---------------------------------------------------------------------------------

  function loginPage() {
    const form = document.getElementById("login-form");
    const field = document.getElementById("token");
    const error = document.getElementById("login-error");
    const button = document.getElementById("sign-in");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      // Take the token out of the page before anything else can fail.
      const token = field.value.trim();
      field.value = "";
      showMessage(error, "");
      if (!token) {
        showMessage(error, "Paste a token to sign in.");
        field.focus();
        return;
      }
      button.disabled = true;
      try {
        await api("POST", "/session", { token });
        window.location.replace("/");
      } catch (err) {
        const text =
          err.status === 401
            ? "The cluster did not accept this token."
            : err.status === 429
              ? `Too many failed sign-ins: ${err.detail}`
              : describe(err, "", "");
        showMessage(error, text);
        field.focus();
      } finally {
        button.disabled = false;
      }
    });
    field.focus();
  }

  // -- start ----------------------------------------------------------------------------------------

  function start() {
    const page = document.body.dataset.page;
    const run = { login: loginPage, pipelines: pipelinesPage, audit: auditPage }[page];
    if (!run) return;
    Promise.resolve(run()).catch((err) => {
      showMessage(document.getElementById("page-error") || document.getElementById("login-error"), describe(err, "", ""));
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
