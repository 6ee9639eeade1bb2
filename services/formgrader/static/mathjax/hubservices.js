// hubservices: MathJax's settings for the grading page and feedback, as nbconvert's inline
// configuration has them ($...$ inline, $$...$$ display), from a file: no inline script under
// the formgrader's CSP. Loaded by MathJax as config "local/hubservices".
MathJax.Hub.Config({
    TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
    tex2jax: {
        inlineMath: [["$", "$"], ["\\(", "\\)"]],
        displayMath: [["$$", "$$"], ["\\[", "\\]"]],
        processEscapes: true,
        processEnvironments: true
    },
    displayAlign: "center",
    messageStyle: "none",
    CommonHTML: {linebreaks: {automatic: true}}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/hubservices.js");
