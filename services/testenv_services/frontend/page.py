"""The single HTML page. Only same-origin relative URLs, so any port-forward works."""

from typing import Final

INDEX_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>testenv demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  form { display: flex; gap: .5rem; margin: .5rem 0; flex-wrap: wrap; }
  input { flex: 1; padding: .4rem; }
  #messages { list-style: none; padding: 0; border: 1px solid #ccc; min-height: 8rem; }
  #messages li { padding: .25rem .5rem; border-bottom: 1px solid #eee; }
  #messages li.error { color: #b00; }
  #messages li.me { color: #555; }
  #status { font-weight: bold; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<h1>testenv demo</h1>
<p>Status: <span id="status" data-state="disconnected">disconnected</span></p>

<form id="login-form" autocomplete="off">
  <input id="email" name="email" type="email" placeholder="email" required>
  <input id="password" name="password" type="password" placeholder="password" required>
  <button id="login" type="submit">Log in</button>
</form>
<p id="login-error" role="alert"></p>

<section id="chat" hidden>
  <form id="chat-form" autocomplete="off">
    <input id="chat-input" name="text" placeholder="Say something" required>
    <button id="send" type="submit">Send</button>
  </form>
  <button id="onboarding-start" type="button">Start onboarding</button>
  <button id="onboarding-next" type="button">Next step</button>
  <ul id="messages"></ul>
</section>

<script>
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var socket = null;

  function setStatus(state, detail) {
    $("status").dataset.state = state;
    $("status").textContent = detail ? state + " (" + detail + ")" : state;
  }

  function addMessage(text, kind) {
    var li = document.createElement("li");
    li.textContent = text;
    li.className = kind || "";
    $("messages").appendChild(li);
  }

  function render(msg) {
    switch (msg.type) {
      case "pong": setStatus("connected"); break;
      case "chat_response": addMessage(msg.text, "chat_response"); break;
      case "onboarding_step":
        addMessage("Step " + msg.step + "/" + msg.total + ": " + msg.title, "onboarding_step");
        break;
      case "onboarding_complete": addMessage("Onboarding complete", "onboarding_complete"); break;
      case "error": addMessage("Error: " + msg.error, "error"); break;
      default: addMessage(JSON.stringify(msg), "other");
    }
  }

  function send(msg) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(msg)); }
  }

  function connect(token) {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + location.host + "/ws?token=" + encodeURIComponent(token);
    socket = new WebSocket(url);
    setStatus("connecting");
    socket.onopen = function () { send({ type: "ping" }); };
    socket.onmessage = function (event) {
      try { render(JSON.parse(event.data)); } catch (e) { addMessage(String(event.data), "other"); }
    };
    socket.onclose = function (event) {
      setStatus("disconnected", event.reason || ("code " + event.code));
      socket = null;
    };
  }

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("login-error").textContent = "";
    $("login").disabled = true;
    fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: $("email").value, password: $("password").value })
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) {
        if (!resp.ok) { throw new Error(body.detail || body.error || ("HTTP " + resp.status)); }
        return body;
      });
    }).then(function (body) {
      $("login-form").hidden = true;
      $("chat").hidden = false;
      connect(body.access_token);
    }).catch(function (err) {
      $("login-error").textContent = "Login failed: " + err.message;
    }).finally(function () { $("login").disabled = false; });
  });

  $("chat-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = $("chat-input").value;
    if (!text) { return; }
    addMessage("You: " + text, "me");
    send({ type: "chat", text: text });
    $("chat-input").value = "";
  });
  $("onboarding-start").addEventListener("click", function () {
    send({ type: "onboarding_start" });
  });
  $("onboarding-next").addEventListener("click", function () {
    send({ type: "onboarding_next" });
  });
})();
</script>
</body>
</html>
"""
