// eprd catalog page: live updates (server-sent events), search as you type, keyboard moves.
// No framework and no build step; every request stays on this registry.
"use strict";
(function () {
  const body = document.body;

  // Fetch the page again (never from the browser cache) and swap its live regions in place,
  // so focus and the text typed in the search box stay where they are.
  let pending = null;
  async function refresh(url) {
    const target = url || location.href;
    if (pending) pending.abort();
    const controller = new AbortController();
    pending = controller;
    let html;
    try {
      const response = await fetch(target, { cache: "no-store", signal: controller.signal });
      html = await response.text();
    } catch (err) {
      return;
    } finally {
      if (pending === controller) pending = null;
    }
    const next = new DOMParser().parseFromString(html, "text/html");
    const regions = document.querySelectorAll("[data-live]");
    const complete = Array.from(regions).every((r) => next.getElementById(r.id));
    if (!complete) {
      document.querySelector("main").replaceWith(document.adoptNode(next.querySelector("main")));
      document.getElementById("status").replaceWith(document.adoptNode(next.getElementById("status")));
    } else {
      regions.forEach((region) => region.replaceWith(document.adoptNode(next.getElementById(region.id))));
    }
    document.title = next.title;
    body.dataset.generation = next.body.dataset.generation;
    if (url && url !== location.href) history.replaceState(null, "", url);
    filterByText();
    setLive(true);
  }

  function setLive(on) {
    const state = document.getElementById("live-state");
    if (state) {
      state.textContent = on ? "live" : "reconnecting…";
      state.classList.toggle("off", !on);
    }
  }

  // Server-sent events: one per snapshot swap, naming its generation.
  if (window.EventSource) {
    const events = new EventSource("/ui/events");
    events.addEventListener("snapshot", (event) => {
      const data = JSON.parse(event.data);
      setLive(true);
      if (String(data.generation) !== body.dataset.generation) refresh();
    });
    events.addEventListener("error", () => setLive(false));
    events.addEventListener("open", () => setLive(true));
  }

  // Search by name or title as you type: rows are hidden here, without a request.
  function filterByText() {
    const box = document.getElementById("q");
    const list = document.getElementById("packages");
    if (!box || !list) return;
    const needle = box.value.trim().toLowerCase();
    let shown = 0;
    list.querySelectorAll("li.pkg").forEach((row) => {
      const hit = !needle || row.dataset.name.includes(needle) || row.dataset.title.includes(needle);
      row.hidden = !hit;
      if (hit) shown++;
    });
    const count = document.getElementById("shown");
    if (count) count.textContent = String(shown);
    const empty = document.getElementById("empty");
    if (empty && !document.querySelector("#results .error")) empty.hidden = shown > 0;
  }

  // The filters map onto /search parameters: the server selects, the page swaps the list.
  function filterUrl() {
    const form = document.getElementById("filters");
    const params = new URLSearchParams();
    new FormData(form).forEach((value, key) => {
      if (String(value).trim()) params.append(key, String(value).trim());
    });
    const query = params.toString();
    return location.pathname + (query ? "?" + query : "");
  }

  function setUpFilters() {
    const form = document.getElementById("filters");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      refresh(new URL(filterUrl(), location.href).href);
    });
    form.addEventListener("change", (event) => {
      if (event.target.id === "q") return;
      refresh(new URL(filterUrl(), location.href).href);
    });
    const box = document.getElementById("q");
    box.addEventListener("input", () => {
      filterByText();
      history.replaceState(null, "", filterUrl());
    });
    let typing = null;
    document.getElementById("kibana").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => refresh(new URL(filterUrl(), location.href).href), 300);
    });
  }

  // Keyboard: "/" goes to the search box, j/k or the arrows move between packages.
  function rows() {
    return Array.from(document.querySelectorAll("#packages li.pkg:not([hidden]) a.open"));
  }
  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
    if (event.key === "/" && !typing) {
      const box = document.getElementById("q");
      if (box) {
        event.preventDefault();
        box.focus();
        box.select();
      }
      return;
    }
    if (event.key === "Escape" && event.target.id === "q") {
      event.target.blur();
      return;
    }
    const down = event.key === "j" || event.key === "ArrowDown";
    const up = event.key === "k" || event.key === "ArrowUp";
    if ((!down && !up) || event.altKey || event.ctrlKey || event.metaKey) return;
    if (typing && !(event.target.id === "q" && down)) return;
    const links = rows();
    if (!links.length) return;
    const at = links.indexOf(document.activeElement);
    const next = at < 0 ? 0 : Math.min(links.length - 1, Math.max(0, at + (down ? 1 : -1)));
    event.preventDefault();
    links[next].focus();
    links[next].scrollIntoView({ block: "nearest" });
  });

  setUpFilters();
  filterByText();
})();
