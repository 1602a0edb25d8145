// The book's own fixes to the theme's JavaScript (loaded on every page from _static/).
//
// Phones and tablets: below 992 px the menu (☰) and "On this page" buttons did nothing.
// pydata-sphinx-theme 0.17.1 and sphinx-book-theme 1.3.0 bind their click handlers with
// document.querySelector(".primary-toggle"), i.e. to the FIRST such button, which is a hidden
// duplicate; the visible one has no handler. Forward clicks on every other toggle button to
// the one that has the handlers. (Upstream bug; remove this when a fixed theme is pinned.)
(function () {
  function forwardToggles() {
    [".primary-toggle", ".secondary-toggle"].forEach(function (selector) {
      var buttons = document.querySelectorAll(selector);
      for (var i = 1; i < buttons.length; i++) {
        buttons[i].addEventListener("click", function (event) {
          event.preventDefault();
          event.stopPropagation();
          this.blur();
          buttons[0].click();
        });
      }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", forwardToggles);
  } else {
    forwardToggles();
  }
})();
