// banger web UI: follows a VM's serial log, and sends a login link's code.
// The log is guest output: it is only ever set as text (textContent), never
// parsed as HTML.
"use strict";

const LOG_KEEP_CHARS = 200000;

async function followLog(pre, status) {
  let response;
  try {
    response = await fetch(pre.dataset.logSrc, { credentials: "same-origin" });
  } catch (error) {
    status.textContent = "log unavailable: " + error.message;
    return;
  }
  if (!response.ok || response.redirected || !response.body) {
    status.textContent = "log unavailable (HTTP " + response.status + ")";
    return;
  }
  status.textContent = "following";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      const text = pre.textContent + decoder.decode(value, { stream: true });
      pre.textContent = text.length > LOG_KEEP_CHARS ? text.slice(-LOG_KEEP_CHARS) : text;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    status.textContent = "log ended";
  } catch (error) {
    status.textContent = "log stream interrupted: " + error.message;
  }
}

const pre = document.getElementById("serial-log");
if (pre) followLog(pre, document.getElementById("log-status"));

// A `banger web` login link: /login#code=... The fragment never reaches the
// server by itself; take it out of the address bar (and the history entry),
// then POST it. Also on hashchange: opening the link while this page is shown
// only changes the fragment, without a reload.
function logInWithLinkCode() {
  const form = document.getElementById("link-login");
  const code = /^#code=([A-Za-z0-9._-]+)$/.exec(window.location.hash);
  if (!form || !code) return;
  history.replaceState(null, "", window.location.pathname);
  form.elements.code.value = code[1];
  form.submit();
}

logInWithLinkCode();
window.addEventListener("hashchange", logInWithLinkCode);
