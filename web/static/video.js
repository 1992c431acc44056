// Glimpse video player (issue 27): start at the moment a result showed, mark the other moments on a timeline
// the length of the video, seek on a click (on a moment, or on a scene of the strip under it), and ask
// "more like this" for the moment being watched.
(function () {
  "use strict";
  var video = document.getElementById("player");
  if (!video) return;
  var start = parseFloat(video.dataset.time) || 0;
  var duration = parseFloat(video.dataset.duration) || 0;
  var marks = document.querySelectorAll(".timeline .moment");
  // Some builds drop the #t= fragment (after a redirect, say): seek once the length is known, still paused.
  video.addEventListener("loadedmetadata", function () {
    if (Math.abs(video.currentTime - start) > 0.25) video.currentTime = start;
    if (!duration && isFinite(video.duration)) duration = video.duration;
    place();
  }, { once: true });
  // Each mark sits at its time along the bar (the CSP allows no inline style attribute: set here).
  function place() {
    Array.prototype.forEach.call(marks, function (mark) {
      var t = parseFloat(mark.dataset.time) || 0;
      if (duration > 0) mark.style.left = (100 * Math.min(1, t / duration)) + "%";
    });
  }
  place();
  // A moment on the timeline, or a scene in the strip under it: play from there.
  Array.prototype.forEach.call(document.querySelectorAll(".timeline .moment, .scenes .scene"), function (mark) {
    mark.addEventListener("click", function () {
      video.currentTime = parseFloat(mark.dataset.time) || 0;
      video.play().catch(function () {});  // a browser that refuses to autoplay still seeks
    });
  });
  // "More like this" searches from the frame on screen, not from where the page started.
  var like = document.querySelector("a.like-moment");
  if (like) {
    like.addEventListener("click", function () {
      var url = new URL(like.href, location.href);
      url.searchParams.set("t", video.currentTime.toFixed(1));
      like.href = url.toString();
    });
  }
})();
