// Pages of a run that is still going reload themselves, unless the user is typing.
(function () {
  var seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  setInterval(function () {
    var active = document.activeElement;
    var typing = active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
    if (!typing) window.location.reload();
  }, seconds * 1000);
})();
