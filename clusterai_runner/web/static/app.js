// Cluster AI's only script, served by the app itself (the Content-Security-Policy allows
// no other and no inline code). It does three things:
//  - [data-refresh]: replace the element's content with the fragment at that URL every
//    data-every milliseconds (the overview's hosts);
//  - [data-append]: append the rows that came after data-after (a running run's log),
//    until a row says the run ended;
//  - form[data-confirm]: ask before sending.
// The server renders and escapes every fragment; this script never builds HTML itself.
"use strict";

function fetchFragment(url) {
  return fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
    .then(function (response) {
      if (response.status === 401) {
        window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
        throw new Error("logged out");
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.text();
    });
}

function refresh(element) {
  var every = parseInt(element.dataset.every || "5000", 10);
  function step() {
    fetchFragment(element.dataset.refresh)
      .then(function (html) {
        element.innerHTML = html;
        element.removeAttribute("data-stale");
      })
      .catch(function () {
        element.setAttribute("data-stale", "1");
      })
      .finally(function () {
        window.setTimeout(step, every);
      });
  }
  window.setTimeout(step, every);
}

function append(element) {
  var every = parseInt(element.dataset.every || "2000", 10);
  var body = element.querySelector("tbody");
  function step() {
    var url = element.dataset.append + "?after=" + encodeURIComponent(element.dataset.after);
    fetchFragment(url)
      .then(function (html) {
        var holder = document.createElement("tbody");
        holder.innerHTML = html;
        var done = false;
        Array.prototype.slice.call(holder.children).forEach(function (row) {
          if (row.dataset.after) {
            element.dataset.after = row.dataset.after;
          }
          if (row.dataset.done) {
            done = true;
          }
          body.appendChild(row);
        });
        if (!done) {
          window.setTimeout(step, every);
        }
      })
      .catch(function () {
        window.setTimeout(step, every * 2);
      });
  }
  window.setTimeout(step, every);
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  document.querySelectorAll("[data-append]").forEach(append);
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
});
