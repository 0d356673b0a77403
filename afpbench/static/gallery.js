// Marks the page ready once every thumbnail has loaded, and says how many did (the tests read it).
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("figure img"));
  var loaded = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute("data-ready", "1");
  document.body.setAttribute("data-thumbnails", String(loaded));
  console.log("afpbench-gallery-ready " + loaded + "/" + imgs.length);
});
