// The live studio page: pickers, the stream WebSocket, the canvas, metrics. No build step, no libraries.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("video"), ctx = canvas.getContext("2d");
  const studio = window.studio = {
    framesDrawn: 0, lastFrame: -1, lastChunk: -1, garmentShown: null, chunkGarment: {}, chunkSwitch: {},
    streaming: false, info: null, person: null, garment: null, seq: 0, clicks: {}, drawTimes: [],
    names: {},
  };
  let ws = null;

  function say(text, kind) {
    const box = $("messages"), div = document.createElement("div");
    div.className = "msg " + (kind || "status");
    div.textContent = text;
    box.prepend(div);
    while (box.children.length > 6) box.lastChild.remove();
  }

  function setStreaming(on) {
    studio.streaming = on;
    $("start").disabled = on;
    $("stop").disabled = !on;
    $("state").textContent = on ? "streaming" : "stopped";
  }

  function select(kind, id) {
    studio[kind] = id;
    document.querySelectorAll(`#${kind === "person" ? "people" : "garments"} button`).forEach(
      (b) => b.classList.toggle("selected", b.dataset.id === id));
  }

  function addItem(kind, item) {
    const box = $(kind === "person" ? "people" : "garments");
    const b = document.createElement("button");
    b.dataset.id = item.id;
    b.title = item.name;
    b.innerHTML = `<img alt="${item.name}" src="${item.url}">`;
    studio.names[item.id] = item.name;
    b.addEventListener("click", () => (kind === "person" ? select("person", item.id) : garmentClick(item.id)));
    box.appendChild(b);
  }

  function options() {
    const chosen = { refresh: $("refresh").checked, withdraw: $("withdraw").checked, disentangle: $("disentangle").checked };
    if (studio.info && studio.info.edit) chosen.edit = $("edit").checked;
    return chosen;
  }

  function send(message) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { say("not connected to the server", "error"); return; }
    ws.send(typeof message === "string" ? message : JSON.stringify(message));
  }
  studio.send = send;

  function garmentClick(id) {
    select("garment", id);
    if (!studio.streaming) return;
    const seq = ++studio.seq;
    studio.clicks[seq] = performance.now();
    send({ type: "switch", garment: id, seq: seq, options: options() });
  }

  function onChunk(m) {
    studio.chunkGarment[m.index] = m.garment;
    if (m.switch) {
      studio.chunkSwitch[m.index] = m.switch;
      $("switch-latency").textContent =
        `${Math.round(m.switch.latency_ms)} ms, ${m.switch.latency_chunks} chunk boundar` +
        `${m.switch.latency_chunks === 1 ? "y" : "ies"} (click → generated)`;
    }
  }

  function onFrame(buffer) {
    const view = new DataView(buffer), number = view.getUint32(0), chunk = view.getUint32(4);
    const blob = new Blob([new Uint8Array(buffer, 8)], { type: "image/jpeg" });
    createImageBitmap(blob).then((bitmap) => {
      if (number <= studio.lastFrame) return;
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width; canvas.height = bitmap.height;
      }
      ctx.drawImage(bitmap, 0, 0);
      studio.lastFrame = number; studio.lastChunk = chunk; studio.framesDrawn += 1;
      const g = studio.chunkGarment[chunk];
      if (g !== undefined && g !== studio.garmentShown) {
        studio.garmentShown = g;
        $("garment-now").textContent = studio.names[g] || g;
        document.querySelectorAll("#garments button").forEach((b) => b.classList.toggle("showing", b.dataset.id === g));
      }
      const sw = studio.chunkSwitch[chunk];
      if (sw && !sw.shown && studio.clicks[sw.seq] !== undefined) {
        sw.shown = performance.now() - studio.clicks[sw.seq];
        $("switch-latency").textContent += `; ${Math.round(sw.shown)} ms to screen`;
      }
      canvas.dataset.frame = number;
      $("frames").textContent = studio.framesDrawn;
      const now = performance.now(), t = studio.drawTimes;
      t.push(now);
      while (t.length && now - t[0] > 2000) t.shift();
      if (t.length > 2) $("fps").textContent = ((t.length - 1) * 1000 / (now - t[0])).toFixed(1);
    }, () => say("a frame could not be decoded", "error"));
  }

  function onMessage(event) {
    if (typeof event.data !== "string") { onFrame(event.data); return; }
    const m = JSON.parse(event.data);
    if (m.type === "chunk") { onChunk(m); return; }
    if (m.type === "status") {
      if (m.state === "started") {
        setStreaming(true);
        $("download").href = m.recording; $("download").classList.remove("disabled");
        say(`stream started; prompt: ${m.prompt}`);
        return;
      }
      if (m.state === "stopped") { setStreaming(false); }
      if (m.state === "switch_queued") return;
    }
    if (m.type === "error" && m.about === "stream") setStreaming(false);
    say(m.message || JSON.stringify(m), m.type);
  }

  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { $("state").textContent = "ready"; };
    ws.onmessage = onMessage;
    ws.onclose = () => { setStreaming(false); $("state").textContent = "disconnected"; say("disconnected from the server", "error"); };
  }

  async function upload(kind, input) {
    const file = input.files[0];
    input.value = "";
    if (!file) return;
    if (studio.info && file.size > studio.info.max_upload_bytes) {
      say(`upload too large: ${(file.size / 1048576).toFixed(1)} MiB; the limit is ${studio.info.max_upload_bytes / 1048576} MiB`, "error");
      return;
    }
    try {
      const r = await fetch(`/api/upload?kind=${kind}`, { method: "POST", body: file,
        headers: { "Content-Type": file.type || "application/octet-stream" } });
      const body = await r.json();
      if (!r.ok) { say(`upload failed: ${body.error}`, "error"); return; }
      addItem(kind, { id: body.id, name: file.name, url: body.url });
      say(`uploaded ${file.name}`);
      if (kind === "person") select("person", body.id); else garmentClick(body.id);
    } catch (e) { say(`upload failed: ${e}`, "error"); }
  }

  $("start").addEventListener("click", () => {
    studio.chunkGarment = {}; studio.chunkSwitch = {}; studio.lastFrame = -1; studio.garmentShown = null;
    send({ type: "start", person: studio.person, garment: studio.garment, prompt: $("prompt").value });
  });
  $("stop").addEventListener("click", () => send({ type: "stop" }));
  ["refresh", "withdraw", "disentangle", "edit"].forEach((name) =>
    $(name).addEventListener("change", () => { if (ws && ws.readyState === WebSocket.OPEN) send({ type: "options", ...options() }); }));
  $("upload-person").addEventListener("change", (e) => upload("person", e.target));
  $("upload-garment").addEventListener("change", (e) => upload("garment", e.target));

  fetch("/api/info").then((r) => r.json()).then((info) => {
    studio.info = info;
    $("model").textContent = `${info.model} · ${info.width}x${info.height} @ ${info.fps} fps · ${info.max_streams} streams at most`;
    canvas.width = info.width; canvas.height = info.height;
    if (info.edit) { $("edit-name").textContent = info.edit; $("edit-toggle").hidden = false; }
    info.people.forEach((p) => addItem("person", p));
    info.garments.forEach((g) => addItem("garment", g));
    select("person", info.people[0].id);
    select("garment", info.garments[0].id);
    connect();
  });
})();
