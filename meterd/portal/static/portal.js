/* meterd portal: the one script. Every page works without it; it only adds
   - copy buttons (Pix copia e cola, a new token or key) and the print button;
   - live alarms: an EventSource on a list's data-live URL, whose "alarm"
     events carry the server-rendered <li> of a new or changed alarm and whose
     "cleared" events name the <li> to take away; when the server refuses the
     stream (too many open, or a port that cannot hold one) the list's section
     is reloaded every few seconds instead;
   - regions that refresh themselves: an element with data-refresh="N" is
     fetched again from the page every N seconds (the fleet's figures);
   - navigation without full reloads: same-site links and GET forms fetch the
     next page and swap its header and <main> in, falling back to an ordinary
     page load on any failure.
   No inline code anywhere, so the page's CSP forbids all inline script. */
(function () {
  "use strict";

  var sources = [];
  var timers = [];
  var FALLBACK_SECONDS = 5;

  function enhance(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) return;
      button.hidden = false;
      button.addEventListener("click", function () { copy(target, button); });
    });
    root.querySelectorAll("[data-print]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { window.print(); });
    });
    root.querySelectorAll("[data-live]").forEach(subscribe);
    root.querySelectorAll("[data-refresh]").forEach(function (element) {
      refresh(element, Number(element.getAttribute("data-refresh")) || FALLBACK_SECONDS);
    });
  }

  // -- copy ---------------------------------------------------------------

  function copy(target, button) {
    var text = "value" in target ? target.value : target.textContent;
    var status = button.parentNode.querySelector(".copy-status");
    function done(ok) {
      if (status) status.textContent = ok ? button.getAttribute("data-copied") : "";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { done(true); },
        function () { done(selectAndCopy(target)); }
      );
    } else {
      done(selectAndCopy(target));
    }
  }

  function selectAndCopy(target) {
    target.focus();
    if (target.select) target.select();
    try {
      return document.execCommand("copy");
    } catch (e) {
      return false;
    }
  }

  // -- live alarms ------------------------------------------------------------

  function subscribe(list) {
    var section = list.closest("section[id]");
    if (!window.EventSource) {
      if (section) refresh(section, FALLBACK_SECONDS);
      return;
    }
    var source = new EventSource(list.getAttribute("data-live"));
    sources.push(source);
    source.addEventListener("alarm", function (event) {
      var doc = new DOMParser().parseFromString(event.data, "text/html");
      var item = doc.body.firstElementChild;
      if (!item || item.tagName !== "LI" || !item.id) return;
      enhance(item);
      var old = document.getElementById(item.id);
      if (old) {
        old.replaceWith(item);
      } else {
        list.insertBefore(item, list.firstElementChild);
      }
      var empty = document.getElementById("no-active");
      if (empty) empty.remove();
    });
    source.addEventListener("cleared", function (event) {
      var item = document.getElementById(event.data);
      if (!item || item.parentNode !== list) return;
      item.remove();
      if (!list.firstElementChild && !document.getElementById("no-active")) {
        var empty = document.createElement("p");
        empty.id = "no-active";
        empty.className = "all-clear";
        empty.textContent = list.getAttribute("data-empty");
        list.parentNode.insertBefore(empty, list);
      }
    });
    source.addEventListener("error", function () {
      // CONNECTING: the browser retries by itself. CLOSED: the server refused; reload the section instead.
      if (source.readyState !== EventSource.CLOSED) return;
      sources = sources.filter(function (s) { return s !== source; });
      if (section) refresh(section, FALLBACK_SECONDS);
    });
  }

  // -- regions that refresh themselves ----------------------------------------

  function refresh(element, seconds) {
    var id = element.id;
    var timer = window.setInterval(function () {
      var current = document.getElementById(id);
      if (!current || document.hidden) return;
      if (current.contains(document.activeElement)) return;  // never pull the focus away from someone
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (!response.ok || response.redirected || type.indexOf("text/html") !== 0) throw new Error("not this page");
          return response.text();
        })
        .then(function (text) {
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById(id);
          var now = document.getElementById(id);
          if (fresh && now && !now.contains(document.activeElement)) now.replaceWith(fresh);
        })
        .catch(function () {});
    }, seconds * 1000);
    timers.push(timer);
  }

  function closeSources() {
    sources.forEach(function (source) { source.close(); });
    sources = [];
    timers.forEach(function (timer) { window.clearInterval(timer); });
    timers = [];
  }

  // -- navigation -----------------------------------------------------------

  function swappable(url) {
    return url.origin === location.origin &&
      url.pathname.indexOf("/portal/") === 0 &&
      url.pathname.indexOf("/portal/static/") !== 0 &&
      !/\.csv$/.test(url.pathname);
  }

  function navigate(href, push) {
    fetch(href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("text/html") !== 0) throw new Error("not a page");
        return response.text().then(function (text) { return { text: text, url: response.url }; });
      })
      .then(function (page) {
        var doc = new DOMParser().parseFromString(page.text, "text/html");
        var main = doc.getElementById("main");
        var header = doc.querySelector(".site-header");
        var oldHeader = document.querySelector(".site-header");
        if (!main || !header || !oldHeader) throw new Error("not a portal page");
        closeSources();
        document.getElementById("main").replaceWith(main);
        oldHeader.replaceWith(header);
        document.title = doc.title;
        document.documentElement.lang = doc.documentElement.lang;
        document.body.className = doc.body.className;
        if (push) history.pushState({ portal: true }, "", page.url);
        enhance(main);
        window.scrollTo(0, 0);
        main.focus();
      })
      .catch(function () { location.href = href; });
  }

  document.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0 ||
        event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var link = event.target.closest("a[href]");
    if (!link || link.hasAttribute("download") || (link.target && link.target !== "_self")) return;
    var url = new URL(link.href, location.href);
    if (!swappable(url)) return;
    if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
    event.preventDefault();
    navigate(url.href, true);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || (form.method || "get").toLowerCase() !== "get") return;
    var url = new URL(form.action, location.href);
    if (!swappable(url)) return;
    url.search = new URLSearchParams(new FormData(form)).toString();
    event.preventDefault();
    navigate(url.href, true);
  });

  window.addEventListener("popstate", function () { navigate(location.href, false); });

  enhance(document);
})();
