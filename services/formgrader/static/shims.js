// hubservices: loaded after nbgrader's own scripts on every formgrader page.

// nbgrader's "open in the notebook server" links (/tree/..., /notebooks/...) lead nowhere
// outside a notebook server: linkTo leaves them as plain text.
var linkTo = function (type, path) {
    return function (_, el) { return el; };
};

// No MathJax is served (no CDN): the grading page's wait for it ends at once.
if (typeof MathJax === "undefined") {
    var MathJax = {Hub: {Startup: {signal: {Interest: function (callback) {
        setTimeout(function () { callback("End"); }, 0);
    }}}}};
}
