// hubservices: the course page's jobs, live: batches with their progress and failures, a
// cancel button, and autograde of every submission. Drawn with textContent only: student ids
// and nbgrader's messages are never parsed as HTML.
"use strict";
(function () {
    var section = document.getElementById("jobs");
    var base = section.dataset.base;
    var xsrf = section.dataset.xsrf;
    var problem = document.getElementById("jobs-error");
    var timer = null;

    function element(tag, text, className) {
        var el = document.createElement(tag);
        if (text !== undefined && text !== null) { el.textContent = String(text); }
        if (className) { el.className = className; }
        return el;
    }

    function row(cells) {
        var tr = document.createElement("tr");
        cells.forEach(function (cell) {
            var td = document.createElement("td");
            td.appendChild(cell instanceof Node ? cell : document.createTextNode(cell));
            tr.appendChild(td);
        });
        return tr;
    }

    function report(message) {
        problem.textContent = message || "";
        problem.hidden = !message;
    }

    function post(path) {
        return fetch(base + path, {
            method: "POST",
            credentials: "same-origin",
            headers: {"X-XSRFToken": xsrf},
        }).then(function (response) {
            return response.json().then(function (body) {
                if (!response.ok) { throw new Error(body.message || response.statusText); }
                return body;
            });
        });
    }

    function progress(batch) {
        var finished = batch.done + batch.failed + batch.cancelled;
        var box = element("span", null, "progress");
        var bar = element("progress");
        bar.max = Math.max(batch.total, 1);
        bar.value = batch.total ? finished : 1;
        box.appendChild(bar);
        var text = " " + batch.done + " of " + batch.total + " done";
        if (batch.failed) { text += ", " + batch.failed + " failed"; }
        if (batch.cancelled) { text += ", " + batch.cancelled + " cancelled"; }
        if (batch.running) { text += ", " + batch.running + " running"; }
        if (batch.queued) { text += ", " + batch.queued + " queued"; }
        box.appendChild(document.createTextNode(text));
        if (batch.unsandboxed) {
            box.appendChild(element("strong", " " + batch.unsandboxed + " ran WITHOUT the sandbox",
                                    "unsandboxed"));
        }
        return box;
    }

    function failures(batch) {
        var list = element("ul", null, "failures");
        batch.failures.forEach(function (failure) {
            var item = element("li", failure.args.join(" / ") + ": " + (failure.reason || failure.state));
            item.dataset.job = failure.job;
            list.appendChild(item);
        });
        return list;
    }

    function cancelButton(batch) {
        if (batch.finished) {
            return batch.cancelled_by ? element("span", "cancelled by " + batch.cancelled_by) : "";
        }
        var button = element("button", "Cancel", "cancel");
        button.type = "button";
        button.addEventListener("click", function () {
            button.disabled = true;
            post("api/batches/" + batch.id + "/cancel").then(refresh, function (error) {
                report("Cancel failed: " + error.message);
                button.disabled = false;
            });
        });
        return button;
    }

    function draw(data) {
        var batches = document.getElementById("batches");
        batches.replaceChildren.apply(batches, data.batches.map(function (batch) {
            var tr = row([String(batch.id), batch.action, batch.user, progress(batch),
                          failures(batch), cancelButton(batch)]);
            tr.dataset.batch = batch.id;
            tr.className = batch.finished ? "finished" : "active";
            return tr;
        }));
        var jobs = document.getElementById("job-rows");
        jobs.replaceChildren.apply(jobs, data.jobs.map(function (job) {
            var state = element("span", job.state, "state-" + job.state);
            if (job.isolation === "none") { state.textContent += " (no sandbox)"; }
            var tr = row([String(job.id), job.action, job.args.join(" / "), job.user,
                          state, String(job.attempts)]);
            tr.dataset.job = job.id;
            if (job.state === "failed") { tr.className = "failed"; }
            return tr;
        }));
        return data.batches.some(function (batch) { return !batch.finished; });
    }

    function refresh() {
        clearTimeout(timer);
        // the hub's auth wants the XSRF token on a script's GET too (not on a navigation)
        return fetch(base + "api/jobs", {credentials: "same-origin", headers: {"X-XSRFToken": xsrf}})
            .then(function (response) {
                if (!response.ok) { throw new Error(response.statusText); }
                return response.json();
            })
            .then(function (data) {
                report("");
                var active = draw(data);
                timer = setTimeout(refresh, active ? 1000 : 10000);
            }, function (error) {
                report("Could not load the jobs: " + error.message + "; retrying.");
                timer = setTimeout(refresh, 5000);
            });
    }

    document.querySelectorAll("button.autograde-all").forEach(function (button) {
        button.addEventListener("click", function () {
            var assignment = encodeURIComponent(button.dataset.assignment);
            post("api/assignment/" + assignment + "/autograde").then(refresh, function (error) {
                report("Autograde failed: " + error.message);
            });
        });
    });
    refresh();
})();
