// Glimpse page script: load more / infinite scroll, search by upload (picker, drop, paste), keyboard.
// Plain JS, no build step. Result HTML comes from the server (escaped by Jinja), never built from JSON here.
(function () {
  "use strict";
  // "/" jumps to the search box from anywhere on any page (unless typing in a field).
  document.addEventListener("keydown", function (ev) {
    var tag = (ev.target.tagName || "").toLowerCase();
    var box = document.getElementById("q");
    if (ev.key === "/" && box && tag !== "input" && tag !== "textarea" && tag !== "select" && !ev.ctrlKey && !ev.metaKey) {
      ev.preventDefault();
      box.focus();
      box.select();
    }
  });
  var grid = document.getElementById("results");
  if (!grid) return;
  var more = document.getElementById("more");
  var spinner = document.getElementById("spinner");
  var statusEl = document.getElementById("status");
  var errorEl = document.getElementById("error");
  var form = document.getElementById("search");
  var qInput = document.getElementById("q");
  var fileInput = document.getElementById("file");
  var drop = document.getElementById("drop");
  var panel = document.getElementById("query-panel");
  var maxUpload = parseInt(grid.dataset.maxUpload || "0", 10);
  var upload = null;      // the File being searched by, while results come from it
  var loading = false;

  function setLoading(on) {
    loading = on;
    spinner.hidden = !on;
    grid.classList.toggle("loading", on);
    grid.setAttribute("aria-busy", on ? "true" : "false");
    if (on) statusEl.textContent = "Searching…";
  }
  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = !message;
  }
  function removeStates() {
    ["empty", "welcome"].forEach(function (id) { var el = document.getElementById(id); if (el) el.remove(); });
  }
  function showEmpty() {
    var div = document.createElement("div");
    div.id = "empty";
    div.className = "notice empty";
    div.innerHTML = "<p><strong>No images match.</strong></p><p>Try other words, remove a filter or lower the minimum score.</p>";
    grid.parentNode.insertBefore(div, grid);
  }
  function readJson(resp) {
    return resp.json().catch(function () { return { error: "unexpected answer from the server (" + resp.status + ")" }; })
      .then(function (data) {
        if (!resp.ok) throw new Error(data.error || ("request failed (" + resp.status + ")"));
        return data;
      });
  }
  // Render one answer from /fragments/*: replace or append the cards, update "load more" and the status line.
  function render(data, append) {
    if (append) grid.insertAdjacentHTML("beforeend", data.html);
    else grid.innerHTML = data.html;
    var shown = grid.querySelectorAll(".card").length;
    // A divider before every card: nothing scored above the index's relevance floor.
    var none = grid.firstElementChild && grid.firstElementChild.classList.contains("divider");
    statusEl.textContent = !shown ? "" : none ? "No good matches; showing the closest"
      : shown + (data.has_more ? "+" : "") + " results";
    if (!shown) showEmpty();
    more.hidden = !data.has_more;
    more.dataset.page = String(data.page + 1);
    if (data.next_url) more.dataset.fragment = data.next_url;
  }
  function filterData(fd) {
    ["folder", "date_from", "date_to", "min_score", "order", "k"].forEach(function (name) {
      var el = form.elements[name];
      if (el && el.value) fd.append(name, el.value);
    });
    return fd;
  }

  // ---------------------------------------------------------------- load more
  function loadMore() {
    if (loading || more.hidden) return;
    showError("");
    setLoading(true);
    var request = upload ? postImage(upload, parseInt(more.dataset.page, 10)) : fetch(more.dataset.fragment, { headers: { Accept: "application/json" } });
    var failed = false;
    request.then(readJson).then(function (data) { render(data, true); })
      .catch(function (err) { failed = true; showError(err.message); })
      .finally(function () { setLoading(false); if (!failed) keepFilling(); });
  }
  // The observer only fires on a change; if "load more" is still in view after a page arrived, go on.
  function keepFilling() {
    if (!more.hidden && more.getBoundingClientRect().top < window.innerHeight + 400) loadMore();
  }
  more.addEventListener("click", function (ev) {
    if (!upload && !more.dataset.fragment) return;  // no script data: follow the plain link
    ev.preventDefault();
    loadMore();
  });
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) loadMore();
    }, { rootMargin: "400px" }).observe(more);
  }

  // ---------------------------------------------------------------- search by image
  function postImage(file, page) {
    var fd = filterData(new FormData());
    fd.append("image", file, file.name || "pasted-image");
    fd.append("page", String(page || 0));
    return fetch(form.getAttribute("data-upload") || "/fragments/image", { method: "POST", body: fd, headers: { Accept: "application/json" } });
  }
  function showUpload(file) {
    var img = document.getElementById("query-image");
    if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
    img.dataset.objectUrl = URL.createObjectURL(file);
    img.removeAttribute("srcset");  // a "more like this" source's thumbnails would win over the upload
    img.src = img.dataset.objectUrl;
    img.alt = "Your image";
    panel.querySelector(".label").textContent = "Images like your upload";
    document.getElementById("query-name").textContent = file.name || "pasted image";
    var path = panel.querySelector(".path");
    if (path) path.remove();
    panel.hidden = false;
  }
  function searchByImage(file) {
    if (!file) return;
    if (file.type && file.type.indexOf("image/") !== 0) { showError("That is not an image file."); return; }
    if (maxUpload && file.size > maxUpload) {
      showError("That image is too large (limit " + Math.round(maxUpload / 1048576) + " MB)."); return;
    }
    var rerun = upload === file && !panel.hidden;  // the shown upload again, with new filters
    upload = file;
    removeStates();
    showError("");
    if (!rerun) panel.hidden = true;  // shown with the results: a file the server refuses gets no (broken) preview
    qInput.value = "";
    var like = form.elements["like"];
    if (like) like.remove();
    history.replaceState(null, "", location.pathname);
    grid.innerHTML = "";
    more.hidden = true;
    setLoading(true);
    var failed = false;
    postImage(file, 0).then(readJson).then(function (data) { showUpload(file); render(data, false); })
      .catch(function (err) { failed = true; if (!rerun) upload = null; statusEl.textContent = ""; showError(err.message); })
      .finally(function () { setLoading(false); if (!failed) keepFilling(); });
  }
  fileInput.addEventListener("change", function () { searchByImage(fileInput.files[0]); fileInput.value = ""; });
  var uploadLabel = document.querySelector("label.upload");
  uploadLabel.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); fileInput.click(); }
  });

  var dragDepth = 0;
  function hasFiles(ev) { return ev.dataTransfer && Array.prototype.indexOf.call(ev.dataTransfer.types, "Files") >= 0; }
  document.addEventListener("dragenter", function (ev) { if (hasFiles(ev)) { dragDepth++; drop.hidden = false; } });
  document.addEventListener("dragleave", function () { if (--dragDepth <= 0) { dragDepth = 0; drop.hidden = true; } });
  document.addEventListener("dragover", function (ev) { if (hasFiles(ev)) ev.preventDefault(); });
  document.addEventListener("drop", function (ev) {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth = 0;
    drop.hidden = true;
    searchByImage(ev.dataTransfer.files[0]);
  });
  document.addEventListener("paste", function (ev) {
    var items = (ev.clipboardData && ev.clipboardData.items) || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
        ev.preventDefault();
        searchByImage(items[i].getAsFile());
        return;
      }
    }
  });

  // ---------------------------------------------------------------- form and keyboard
  form.addEventListener("submit", function (ev) {
    var hasText = qInput.value.trim() !== "";
    if (!hasText && upload) { ev.preventDefault(); searchByImage(upload); return; }  // re-run the upload with new filters
    var like = form.elements["like"];
    if (!hasText && !like) { ev.preventDefault(); qInput.focus(); showError("Type something to search for, or upload an image."); return; }
    if (hasText && like) like.disabled = true;  // a typed query replaces "more like this"
    // Leave empty filter fields out of the URL so bookmarks stay short.
    Array.prototype.forEach.call(form.querySelectorAll(".fields input, .fields select"), function (el) {
      if (!el.value || (el.name === "order" && el.value === "relevance") || (el.name === "mode" && el.value === "images")) el.disabled = true;
    });
    setLoading(true);
  });
  // Back/forward restores a page from the cache with disabled fields; re-enable them.
  window.addEventListener("pageshow", function () {
    Array.prototype.forEach.call(form.querySelectorAll("[disabled]"), function (el) { el.disabled = false; });
    setLoading(false);
  });
})();
