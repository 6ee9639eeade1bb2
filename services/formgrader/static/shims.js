// hubservices: loaded after nbgrader's own scripts on every formgrader page.
"use strict";

// This course's page, where nbgrader's pages are under formgrader/.
var hubservicesCourse = document.currentScript.src.replace(/formgrader\/hubservices\/shims\.js.*$/, "");

// nbgrader's "open in the notebook server" links (/tree/..., /notebooks/...) lead nowhere
// outside a notebook server. An assignment's source and release folders (its name, its
// preview icon) open our read-only view of their notebooks; other paths stay plain text.
var linkTo = function (type, path) {
    var folder = /^\/?(source|release)\/([^/]+)\/?$/.exec(path);
    return function (_, el) {
        if (folder) {
            el.setAttribute("href", hubservicesCourse + "view/" + folder[1] + "/" +
                            encodeURIComponent(folder[2]) + "/");
        }
        return el;
    };
};

// No MathJax is served (no node_modules/mathjax): the grading page's wait for it ends at once.
if (typeof MathJax === "undefined") {
    var MathJax = {Hub: {Startup: {signal: {Interest: function (callback) {
        setTimeout(function () { callback("End"); }, 0);
    }}}}};
}

// Instructions that match this service: autograde-all and authoring are on the course page.
document.addEventListener("DOMContentLoaded", function () {
    function courseLink(text) {
        var link = document.createElement("a");
        link.href = hubservicesCourse;
        link.textContent = text;
        return link;
    }
    document.querySelectorAll("a[href$='/terminals/1']").forEach(function (terminal) {
        var note = terminal.closest("p");
        var pre = note.parentNode.querySelector("pre");
        note.replaceChildren(
            "Here you can autograde individual students' submissions by clicking on the " +
            "autograde icons below. To autograde every submission at once, use Autograde all " +
            "on the ", courseLink("course page"), ": it runs as a job, with its progress shown there.");
        if (pre) { pre.remove(); }
    });
    var steps = document.querySelectorAll("#collapseOne ol > li");
    if (steps.length >= 2 && /Add new assignment/.test(steps[0].textContent)) {
        steps[0].replaceChildren("To create an assignment, upload its notebooks on the ",
                                 courseLink("course page"), " (or click \"Add new assignment...\" " +
                                 "below for its name and due date).");
        steps[1].replaceChildren("To see an assignment's files, click on its name; upload new " +
                                 "versions on the ", courseLink("course page"), ".");
    }
});
