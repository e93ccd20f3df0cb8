/* mlqueue dashboard: the Code page's editor (Ace, bundled in ./ace) and live output panes.
 *
 * Ace is not among the scripts Dash puts on every page (app.py ignores ./ace): the Code page's first
 * editor call loads it, once, from this HQ (nothing from a CDN), so the other pages do not wait for it.
 *
 * Live output: every element with class "live-log" and a data-job attribute follows that Job's output
 * through the API's server-sent events (GET /orders/ID/log?follow=true), appending lines as they come.
 * Dash re-renders pages freely, so a scan every 400 ms attaches streams to new panes and closes the
 * streams of panes that left the page or now show another Job.
 */
(function () {
  "use strict";
  var MAX_LINES = 2000;
  var streams = [];

  function dashPrefix() {
    var config = document.getElementById("_dash-config");
    var prefix = "/ui/";
    try { prefix = JSON.parse(config.textContent).requests_pathname_prefix || prefix; } catch (e) { /* default */ }
    return prefix;
  }

  function apiBase() {
    return dashPrefix().replace(/ui\/$/, "");
  }

  /* Ace and the two modules the editor uses, in this order (async=false keeps it, downloads in parallel). */
  var ACE_FILES = ["ace.js", "mode-python.js", "theme-textmate.js"];
  var aceLoading = null;

  function addScript(src) {
    return new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.src = src;
      tag.async = false;
      tag.onload = resolve;
      tag.onerror = function () { reject(new Error("the editor could not load " + src)); };
      document.head.appendChild(tag);
    });
  }

  function loadAce() {
    if (window.ace) { return Promise.resolve(window.ace); }
    if (!aceLoading) {
      var base = dashPrefix() + "assets/ace/";
      aceLoading = Promise.all(ACE_FILES.map(function (name) { return addScript(base + name); })).then(
        function () { window.ace.config.set("basePath", base); return window.ace; },
        function (error) { aceLoading = null; throw error; });  /* a later visit tries again */
    }
    return aceLoading;
  }

  function addLine(pane, text, cls) {
    var line = document.createElement("div");
    line.className = "log-line" + (cls ? " " + cls : "");
    line.textContent = text;
    var atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 8;
    pane.appendChild(line);
    while (pane.childNodes.length > MAX_LINES) { pane.removeChild(pane.firstChild); }
    if (atBottom) { pane.scrollTop = pane.scrollHeight; }
  }

  function follow(pane, job) {
    pane.textContent = "";
    pane.mlqJob = job;
    if (!job) { return; }
    var source = new EventSource(apiBase() + "orders/" + encodeURIComponent(job) + "/log?follow=true");
    pane.mlqSource = source;
    streams.push(pane);
    source.addEventListener("line", function (event) {
      var data = JSON.parse(event.data);
      addLine(pane, data.line, data.stream === "stderr" ? "stderr" : "");
    });
    source.addEventListener("end", function (event) {
      var data = JSON.parse(event.data);
      addLine(pane, "── job " + data.jobId.slice(0, 10) + " ended: " + data.state + " ──", "end");
      pane.dataset.ended = data.state;
      source.close();
    });
  }

  function scan() {
    streams = streams.filter(function (pane) {
      var gone = !document.body.contains(pane) || pane.mlqJob !== (pane.dataset.job || "");
      if (gone && pane.mlqSource) { pane.mlqSource.close(); pane.mlqSource = null; }
      return !gone;
    });
    var panes = document.querySelectorAll(".live-log");
    for (var i = 0; i < panes.length; i++) {
      var job = panes[i].dataset.job || "";
      if (panes[i].mlqJob !== job) {
        if (panes[i].mlqSource) { panes[i].mlqSource.close(); }
        follow(panes[i], job);
      }
    }
  }

  setInterval(scan, 400);

  /* The editor: one Ace instance on #code-editor; its text goes to the Dash store "code-text". */
  window.mlqueueEditor = {
    editor: null,
    ensure: function () {
      var host = document.getElementById("code-editor");
      if (!host || !window.ace) { return null; }
      if (this.editor && this.editor.container === host) { return this.editor; }
      var editor = window.ace.edit(host, {
        mode: "ace/mode/python", theme: "ace/theme/textmate", useWorker: false, fontSize: 13,
        showPrintMargin: false, tabSize: 4, useSoftTabs: true, wrap: false
      });
      editor.commands.addCommand({  /* Ctrl-S / Cmd-S saves, as in any editor (not the browser's "save page") */
        name: "save", bindKey: {win: "Ctrl-S", mac: "Command-S"},
        exec: function () { var b = document.getElementById("code-save"); if (b) { b.click(); } }
      });
      editor.session.on("change", function () {
        window.dash_clientside.set_props("code-text", {data: editor.getValue()});
      });
      this.editor = editor;
      return editor;
    },
    /* The Code page's clientside callback: Ace loaded (once), the editor made, a version's text put in. */
    load: function (loaded) {
      var self = this;
      return loadAce().then(function () {
        var editor = self.ensure();
        if (!editor || !loaded) { return window.dash_clientside.no_update; }
        editor.session.setValue(loaded.text || "");
        window.dash_clientside.set_props("code-text", {data: editor.getValue()});
        return loaded.nonce;
      });
    }
  };
})();
