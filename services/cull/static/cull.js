// hubservices: the culler's page. "Run a cycle now" without leaving the page: ask for a cycle
// (POST api/cycles), ask api/status until that cycle has finished, then redraw the sections a
// cycle changes from the page as the server renders it now (same look-ahead), so nothing is
// drawn here from data: the template stays the one place that formats the page. Without
// this script the button's form still works (a POST, then the page again).
"use strict";
(function () {
    var form = document.getElementById("run-now");
    if (!form || !window.fetch) { return; }
    var button = form.querySelector("button");
    var status = document.getElementById("run-status");
    var xsrf = form.elements._xsrf.value;
    var POLL_MS = 1000;
    var GIVE_UP_MS = 10 * 60 * 1000;

    function call(path, method) {
        return fetch(form.action.replace(/\/?$/, "/") + path, {
            method: method || "GET",
            credentials: "same-origin",
            // the hub's auth wants the XSRF token on a script's GET too (the page's as well)
            headers: {"X-XSRFToken": xsrf},
        }).then(function (response) {
            return response.json().then(function (body) {
                if (!response.ok) { throw new Error(body.message || response.statusText); }
                return body;
            });
        });
    }

    function say(text, failed) {
        status.textContent = text;
        status.hidden = !text;
        status.classList.toggle("error", !!failed);
    }

    // Whether `cycle` (api/status's last_cycle) is one that ended after the click, when the
    // last cycle was `before`: a newer one, or the one that was still running (a cycle asked
    // for while one runs is that one: the culler never runs two at once).
    function finishedSince(cycle, before) {
        if (!cycle || !cycle.finished_at) { return false; }
        if (!before) { return true; }
        return cycle.id > before.id || (cycle.id === before.id && !before.finished_at);
    }

    function count(n, what) { return n + " " + what + (n === 1 ? "" : "s"); }

    function summary(cycle) {
        var text = "Cycle finished: " + count(cycle.examined, "server") + " examined, " +
            cycle.culled_servers + " culled";
        if (cycle.culled_users) { text += ", " + count(cycle.culled_users, "user") + " removed"; }
        if (cycle.errors) { text += ", " + count(cycle.errors, "error"); }
        return text + (cycle.dry_run ? " (dry run)." : ".");
    }

    function redraw() {
        return fetch(window.location.href, {credentials: "same-origin", headers: {"X-XSRFToken": xsrf}})
            .then(function (response) {
                if (!response.ok) { throw new Error(response.statusText); }
                return response.text();
            })
            .then(function (html) {
                var fresh = new DOMParser().parseFromString(html, "text/html");
                document.querySelectorAll("[data-cycle-view]").forEach(function (view) {
                    var now = fresh.getElementById(view.id);
                    if (now) { view.replaceWith(document.importNode(now, true)); }
                });
            });
    }

    function wait(before, deadline) {
        return call("api/status").then(function (state) {
            if (finishedSince(state.last_cycle, before)) {
                return redraw().then(function () { return state.last_cycle; });
            }
            if (Date.now() > deadline) {
                var late = new Error("The cycle is still running after " + GIVE_UP_MS / 60000 +
                                     " minutes; reload the page later.");
                late.whole = true;
                throw late;
            }
            return new Promise(function (resolve) { setTimeout(resolve, POLL_MS); })
                .then(function () { return wait(before, deadline); });
        });
    }

    form.addEventListener("submit", function (event) {
        event.preventDefault();
        button.disabled = true;
        say("Running a cycle…");
        call("api/status")
            .then(function (state) {
                return call("api/cycles", "POST").then(function () {
                    return wait(state.last_cycle, Date.now() + GIVE_UP_MS);
                });
            })
            .then(function (cycle) { say(summary(cycle)); }, function (error) {
                say(error.whole ? error.message : "Could not run a cycle: " + error.message, true);
            })
            .then(function () { button.disabled = false; });
    });
})();
