// The dashboard's only script (no framework): sign in, roll back, follow events live.
// Everything from the server is put on the page with textContent, never as HTML.
"use strict";

(function () {
  const KEY = "poet.key"; // sessionStorage: this tab only, gone when it closes

  function say(element, message, kind) {
    if (!element) return;
    element.textContent = message;
    element.className = "status " + (kind || "");
  }

  async function problemText(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || response.statusText;
    } catch (error) {
      return response.status + " " + response.statusText;
    }
  }

  // -- sign in: the key goes as a Bearer header once; the server answers with a session cookie
  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", async function (event) {
      event.preventDefault();
      const key = document.getElementById("key").value.trim();
      const status = document.getElementById("login-status");
      say(status, "signing in…");
      const response = await fetch("/dashboard/session", {
        method: "POST", credentials: "same-origin", headers: {"Authorization": "Bearer " + key},
      });
      if (!response.ok) {
        say(status, await problemText(response), "error");
        return;
      }
      sessionStorage.setItem(KEY, key); // reused by the rollback button
      const next = login.dataset.next || "/";
      window.location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
    });
  }

  const signOut = document.getElementById("sign-out");
  if (signOut) {
    signOut.addEventListener("click", async function () {
      sessionStorage.removeItem(KEY);
      await fetch("/dashboard/logout", {method: "POST", credentials: "same-origin"});
      window.location.assign("/login");
    });
  }

  // -- rollback: PUT /api/v1/functions/{id}/current with the tab's key (needs scope write)
  const box = document.getElementById("rollback-box");
  if (box) {
    const field = document.getElementById("write-key");
    const status = document.getElementById("rollback-status");
    field.value = sessionStorage.getItem(KEY) || "";
    field.addEventListener("change", function () { sessionStorage.setItem(KEY, field.value.trim()); });
    document.querySelectorAll("button.rollback").forEach(function (button) {
      button.addEventListener("click", async function () {
        const key = field.value.trim();
        if (!key) {
          say(status, "enter a key with scope write first", "error");
          field.focus();
          return;
        }
        const version = Number(button.dataset.version);
        say(status, "making v" + version + " current…");
        const url = "/api/v1/functions/" + encodeURIComponent(box.dataset.function) + "/current";
        const response = await fetch(url, {
          method: "PUT", credentials: "omit",
          headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
          body: JSON.stringify({version: version}),
        });
        if (!response.ok) {
          say(status, await problemText(response), "error");
          return;
        }
        sessionStorage.setItem(KEY, key);
        say(status, "v" + version + " is current", "ok");
        window.location.reload();
      });
    });
  }

  // -- the diff form: keep the chosen pair selected after the page reloads
  const form = document.getElementById("diff-form");
  if (form) {
    const table = document.querySelector("table.diff");
    const query = new URLSearchParams(window.location.search);
    const a = query.get("a") || (table && table.dataset.old);
    const b = query.get("b") || (table && table.dataset.new);
    if (a) document.getElementById("diff-a").value = a;
    if (b) document.getElementById("diff-b").value = b;
  }

  // -- live events: EventSource on the dashboard's stream (the session cookie authenticates it)
  // (the events page and a function's recent events both follow; the table says what and from when)
  const events = document.getElementById("events");
  if (events && events.dataset.since) {
    const status = document.getElementById("live-status");
    const body = events.querySelector("tbody");
    const seen = new Set(Array.from(body.rows).map(function (row) { return row.dataset.id; }));
    const query = new URLSearchParams(window.location.search);
    const params = new URLSearchParams();
    const only = events.dataset.function || query.get("function");
    if (only) params.set("function", only);
    if (document.body.dataset.page === "events" && query.get("type")) params.set("type", query.get("type"));
    // The server's clock: everything written after it read the rows shown (rows are deduplicated by id).
    params.set("since", events.dataset.since || String(Date.now() / 1000));
    const source = new EventSource("/dashboard/events/stream?" + params.toString(), {withCredentials: true});
    source.addEventListener("open", function () { say(status, "live", "ok"); });
    source.addEventListener("error", function () { say(status, "reconnecting…", "error"); });
    source.addEventListener("poet", function (message) {
      const line = JSON.parse(message.data);
      if (seen.has(line.id)) return;
      seen.add(line.id);
      const row = document.createElement("tr");
      row.dataset.id = line.id;
      row.className = "fresh";
      [line.when, line.type, line.function, "v" + line.version, line.detail].forEach(function (value, index) {
        const cell = document.createElement("td");
        cell.textContent = value;
        if (index === 1) cell.className = "type";
        if (index === 4) cell.className = "detail";
        row.appendChild(cell);
      });
      body.insertBefore(row, body.firstChild);
      const keep = document.body.dataset.page === "events" ? 500 : 20;
      while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
    });
  }
})();
