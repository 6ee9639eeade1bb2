// hubservices: the course page: each assignment's actions and source files, the roster, and
// the jobs, live: batches with their progress and failures, a cancel button. Drawn with textContent only: student ids
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

    function post(path, body) {
        return fetch(base + path, {
            method: "POST",
            credentials: "same-origin",
            headers: {"X-XSRFToken": xsrf},
            body: body,
        }).then(function (response) {
            return response.json().then(function (body) {
                if (!response.ok) { throw new Error(body.message || response.statusText); }
                return body;
            });
        });
    }

    // nbgrader's method names, as the course page's buttons name them
    var ACTIONS = {
        generate_assignment: "Generate", release_assignment: "Release", unrelease: "Unrelease",
        collect: "Collect", autograde: "Autograde", generate_feedback: "Generate feedback",
        release_feedback: "Release feedback"
    };
    var timeFormat = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});

    function actionName(action) { return ACTIONS[action] || action; }

    function when(iso) {
        return iso ? timeFormat.format(new Date(iso)) : "";
    }

    // "4 s", "2 min 5 s", "1 h 3 min": from start to end, or to now while it runs
    function took(start, end) {
        if (!start) { return ""; }
        var seconds = Math.max(0, Math.round(((end ? new Date(end) : new Date()) - new Date(start)) / 1000));
        var text = seconds < 60 ? seconds + " s"
            : seconds < 3600 ? Math.floor(seconds / 60) + " min " + (seconds % 60) + " s"
            : Math.floor(seconds / 3600) + " h " + Math.floor(seconds % 3600 / 60) + " min";
        return end ? text : text + " so far";
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
            var tr = row([String(batch.id), actionName(batch.action), batch.user,
                          when(batch.created_at), took(batch.created_at, batch.finished_at),
                          progress(batch), failures(batch), cancelButton(batch)]);
            tr.dataset.batch = batch.id;
            tr.className = batch.finished ? "finished" : "active";
            return tr;
        }));
        var jobs = document.getElementById("job-rows");
        jobs.replaceChildren.apply(jobs, data.jobs.map(function (job) {
            var state = element("span", job.state, "state-" + job.state);
            if (job.isolation === "none") { state.textContent += " (no sandbox)"; }
            var tr = row([String(job.id), actionName(job.action), job.args.join(" / "), job.user,
                          when(job.queued_at), took(job.started_at, job.finished_at),
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

    document.querySelectorAll("button.action").forEach(function (button) {
        button.addEventListener("click", function () {
            var assignment = encodeURIComponent(button.dataset.assignment);
            button.disabled = true;
            post("api/assignment/" + assignment + "/" + button.dataset.action).then(refresh, function (error) {
                report(button.textContent + " failed: " + error.message);
            }).then(function () { button.disabled = false; });
        });
    });
    var courseProblem = document.getElementById("course-error");
    var limit = Number(document.getElementById("course").dataset.limit);

    function courseReport(message) {
        courseProblem.textContent = message || "";
        courseProblem.hidden = !message;
    }

    function sourcePath(assignment) {
        return "api/assignment/" + encodeURIComponent(assignment) + "/source";
    }

    function drawSources(list, files) {
        list.replaceChildren.apply(list, files.map(function (file) {
            var item = element("li");
            var link = element("a", file.name);
            link.href = base + sourcePath(list.dataset.assignment) + "/" + encodeURIComponent(file.name);
            link.download = file.name;
            item.appendChild(link);
            item.appendChild(document.createTextNode(" (" + Math.ceil(file.size / 1024) + " KB)"));
            return item;
        }));
        if (!files.length) { list.appendChild(element("li", "none yet", "muted")); }
    }

    function loadSources(list) {
        fetch(base + sourcePath(list.dataset.assignment), {credentials: "same-origin", headers: {"X-XSRFToken": xsrf}})
            .then(function (response) { return response.json(); })
            .then(function (files) { drawSources(list, files); });
    }

    // a file over the limit is refused here too, before it travels
    function filesOf(form) {
        var files = Array.prototype.slice.call(form.querySelector("input[type=file]").files);
        var big = files.filter(function (file) { return file.size > limit; });
        if (big.length) { throw new Error(big[0].name + " is larger than " + limit + " bytes"); }
        var body = new FormData();
        files.forEach(function (file) { body.append("file", file); });
        return body;
    }

    function upload(form, assignment, then) {
        var button = form.querySelector("button");
        try {
            var body = filesOf(form);
        } catch (error) {
            courseReport("Upload failed: " + error.message);
            return;
        }
        button.disabled = true;
        post(sourcePath(assignment), body).then(function (files) {
            courseReport("");
            then(files);
        }, function (error) {
            courseReport("Upload failed: " + error.message);
        }).then(function () { button.disabled = false; });
    }

    document.querySelectorAll("ul.sources").forEach(loadSources);
    document.querySelectorAll("form.upload[data-assignment]").forEach(function (form) {
        form.addEventListener("submit", function (event) {
            event.preventDefault();
            var list = document.querySelector("ul.sources[data-assignment='" + CSS.escape(form.dataset.assignment) + "']");
            upload(form, form.dataset.assignment, function (files) { drawSources(list, files); form.reset(); });
        });
    });
    document.getElementById("new-assignment").addEventListener("submit", function (event) {
        event.preventDefault();
        var form = event.target;
        upload(form, form.elements.assignment.value, function () { window.location.reload(); });
    });

    function rosterDone(result) {
        window.location.reload();
        return result;
    }

    document.getElementById("import-group").addEventListener("click", function () {
        post("api/roster/group").then(rosterDone, function (error) {
            courseReport("Import failed: " + error.message);
        });
    });
    document.getElementById("import-csv").addEventListener("submit", function (event) {
        event.preventDefault();
        var body = new FormData();
        body.append("file", event.target.elements.file.files[0]);
        post("api/roster/csv", body).then(rosterDone, function (error) {
            courseReport("Import failed: " + error.message);
        });
    });

    refresh();
})();
