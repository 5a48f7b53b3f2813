/* The console's script: what a page cannot do as a plain form. The pages work without it (lists, forms,
   reports); it adds the playground's streaming, live job progress with its loss curve, and confirmations.

   It calls Outcrop's own API, the same routes boto3 calls, signed by the session cookie plus the session's
   CSRF token in X-Outcrop-Csrf (read from the page's <meta name="outcrop-csrf">): what the API allows this
   principal, and nothing else, with the API's own error messages. */
"use strict";

const CSRF = (document.querySelector('meta[name="outcrop-csrf"]') || {}).content || "";

async function api(method, path, body) {
  const response = await fetch(path, {
    method, credentials: "same-origin",
    headers: {"x-outcrop-csrf": CSRF, "content-type": "application/json", "accept": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return response;
}

async function apiError(response) {
  let text = `${response.status}`;
  try {
    const data = await response.json();
    text = `${data.__type || response.headers.get("x-amzn-errortype") || response.status}: ${data.message || ""}`;
  } catch (_) { /* not JSON */ }
  return text;
}

/* The AWS event stream (application/vnd.amazon.eventstream): each message is a 12-byte prelude (total length,
   headers length, CRC), headers (name, type 7 = string, value), a JSON payload and a CRC. */
async function* awsEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(0);
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer); joined.set(value, buffer.length); buffer = joined;
    while (buffer.length >= 12) {
      const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      const total = view.getUint32(0), headersLength = view.getUint32(4);
      if (buffer.length < total) break;
      const headers = {};
      let at = 12;
      while (at < 12 + headersLength) {
        const nameLength = buffer[at]; at += 1;
        const name = decoder.decode(buffer.subarray(at, at + nameLength)); at += nameLength;
        const type = buffer[at]; at += 1;
        if (type !== 7) throw new Error(`unexpected event-stream header type ${type}`);
        const valueLength = view.getUint16(at); at += 2;
        headers[name] = decoder.decode(buffer.subarray(at, at + valueLength)); at += valueLength;
      }
      const payload = decoder.decode(buffer.subarray(12 + headersLength, total - 4));
      buffer = buffer.slice(total);
      yield {type: headers[":event-type"] || headers[":exception-type"], kind: headers[":message-type"],
             data: payload ? JSON.parse(payload) : {}};
    }
  }
}

function el(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/* -- the playground --------------------------------------------------------------------------------- */

function playground(form) {
  const panes = [...document.querySelectorAll("[data-pane]")];
  const histories = panes.map(() => []);
  const field = (name) => form.elements[name];
  const value = (name) => field(name) ? field(name).value.trim() : "";
  const number = (name) => value(name) === "" ? undefined : Number(value(name));

  function models() {
    return [value("modelA"), value("modelB")].map((m, i) => ({model: m, pane: panes[i], history: histories[i]}))
      .filter((p) => p.model);
  }

  /* Each mode offers the models of its kind (the mode's data-kind; each model's group says its own): the others
     are hidden and cannot be picked, and a model of the wrong kind is refused with a message, never sent. */
  const needs = () => field("mode").selectedOptions[0].dataset.kind;
  const kindOf = (select) => {
    const option = select.selectedOptions[0];
    return option && option.parentElement.tagName === "OPTGROUP" ? option.parentElement.dataset.kind : "";
  };

  function offerModels() {
    const kind = needs();
    for (const name of ["modelA", "modelB"]) {
      const select = field(name);
      select.querySelectorAll("optgroup").forEach((group) => {
        const other = group.dataset.kind !== kind;
        group.hidden = other; group.disabled = other;
      });
      if (select.value && kindOf(select) !== kind) select.value = "";
      if (name === "modelA" && !select.value) {
        const first = select.querySelector(`optgroup[data-kind="${kind}"] option`);
        if (first) select.value = first.value;
      }
    }
  }

  function refusal() {
    const kind = needs(), mode = field("mode").selectedOptions[0].textContent.split(" (")[0].toLowerCase();
    const article = /^[aeiou]/.test(kind) ? "an" : "a";
    if (!value("modelA")) return `No ${kind} model is listed for you, and ${mode} needs ${article} ${kind} model.`;
    for (const name of ["modelA", "modelB"]) {
      if (value(name) && kindOf(field(name)) !== kind) {
        return `${value(name)} is not ${article} ${kind} model, and ${mode} needs one: pick another.`;
      }
    }
    return "";
  }

  function converseBody(history) {
    const body = {messages: history};
    const config = {maxTokens: number("maxTokens"), temperature: number("temperature"), topP: number("topP")};
    Object.keys(config).forEach((k) => config[k] === undefined && delete config[k]);
    if (Object.keys(config).length) body.inferenceConfig = config;
    if (value("system")) body.system = [{text: value("system")}];
    if (number("seed") !== undefined) body.additionalModelRequestFields = {seed: number("seed")};
    return body;
  }

  function textBody(prompt) {
    const config = {maxTokenCount: number("maxTokens"), temperature: number("temperature"), topP: number("topP")};
    Object.keys(config).forEach((k) => config[k] === undefined && delete config[k]);
    const body = {inputText: prompt, textGenerationConfig: config};
    if (number("seed") !== undefined) body.seed = number("seed");
    return body;
  }

  function imageBody(prompt) {
    const config = {numberOfImages: 1};
    if (number("seed") !== undefined) config.seed = number("seed");
    const size = /^(\d+)x(\d+)$/.exec(value("size"));
    if (size) { config.width = Number(size[1]); config.height = Number(size[2]); }
    return {taskType: "TEXT_IMAGE", textToImageParams: {text: prompt}, imageGenerationConfig: config};
  }

  function python(value) {
    return JSON.stringify(value, null, 4).replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False")
      .replace(/\bnull\b/g, "None");
  }

  function code() {
    const mode = value("mode"), model = value("modelA") || "MODEL_ID", prompt = value("prompt") || "Hello!";
    const head = 'import boto3\n\nclient = boto3.client("bedrock-runtime", endpoint_url="' + location.origin + '")\n';
    if (mode === "chat") {
      const body = converseBody([...(histories[0] || []), {role: "user", content: [{text: prompt}]}]);
      const args = Object.entries(body).map(([k, v]) => `    ${k}=${python(v).replace(/\n/g, "\n    ")},`).join("\n");
      return head + `response = client.converse_stream(\n    modelId=${JSON.stringify(model)},\n${args}\n)\n` +
        'for event in response["stream"]:\n    if "contentBlockDelta" in event:\n' +
        '        print(event["contentBlockDelta"]["delta"]["text"], end="")\n';
    }
    if (mode === "images") {
      return head + "import base64\nimport json\n\n" + `body = ${python(imageBody(prompt))}\n` +
        `response = client.invoke_model(modelId=${JSON.stringify(model)}, body=json.dumps(body))\n` +
        'with open("image.png", "wb") as out:\n' +
        '    out.write(base64.b64decode(json.loads(response["body"].read())["images"][0]))\n';
    }
    const body = mode === "text" ? textBody(prompt) : {inputText: prompt};
    const call = mode === "text" ? "invoke_model_with_response_stream" : "invoke_model";
    return head + "import json\n\n" + `body = ${python(body)}\n` +
      `response = client.${call}(modelId=${JSON.stringify(model)}, body=json.dumps(body))\n` +
      (mode === "text" ? 'for event in response["body"]:\n    print(json.loads(event["chunk"]["bytes"])["outputText"], end="")\n'
                       : 'print(json.loads(response["body"].read())["embedding"][:8])\n');
  }

  function refreshCode() {
    const target = document.getElementById("code");
    if (target) target.textContent = code();
    document.querySelector(".panes").classList.toggle("two", Boolean(value("modelB")));
    panes[1].hidden = !value("modelB");
  }

  async function runPane({model, pane, history}, prompt, mode) {
    const transcript = pane.querySelector(".transcript"), stats = pane.querySelector(".stats");
    pane.querySelector("h2").textContent = model;
    transcript.append(el("div", {class: "turn user"}, prompt));
    const answer = el("div", {class: "turn assistant", "aria-live": "polite"});
    transcript.append(answer);
    const started = performance.now();
    let firstToken = null;
    const path = (op) => `/model/${encodeURIComponent(model)}/${op}`;
    try {
      if (mode === "images") {
        const response = await api("POST", path("invoke"), imageBody(prompt));
        if (!response.ok) throw new Error(await apiError(response));
        const data = await response.json();
        if (data.error) throw new Error(data.error);
        const image = el("img", {src: `data:image/png;base64,${data.images[0]}`, alt: prompt, class: "generated"});
        answer.append(image);
        const tokens = response.headers.get("x-amzn-bedrock-input-token-count");
        image.addEventListener("load", () => {
          stats.textContent = `${image.naturalWidth}x${image.naturalHeight} · ${tokens} input tokens · ` +
            `${Math.round(performance.now() - started)} ms`;
        });
        return;
      }
      if (mode === "embeddings") {
        const response = await api("POST", path("invoke"), {inputText: prompt});
        if (!response.ok) throw new Error(await apiError(response));
        const data = await response.json();
        if (!Array.isArray(data.embedding)) throw new Error(`${model} answered without an embedding: it is no embedding model.`);
        const v = data.embedding, norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
        answer.textContent = `${v.length} dimensions, norm ${norm.toFixed(4)}: [` +
          v.slice(0, 8).map((x) => x.toFixed(4)).join(", ") + ", …]";
        stats.textContent = `${data.inputTextTokenCount} input tokens · ${Math.round(performance.now() - started)} ms`;
        return;
      }
      const chat = mode === "chat";
      if (chat) history.push({role: "user", content: [{text: prompt}]});
      const response = chat ? await api("POST", path("converse-stream"), converseBody(history))
                            : await api("POST", path("invoke-with-response-stream"), textBody(prompt));
      if (!response.ok) throw new Error(await apiError(response));
      let usage = null, latency = null, stop = "";
      for await (const event of awsEvents(response)) {
        if (event.kind === "exception") throw new Error(`${event.type}: ${event.data.message}`);
        let text = "";
        if (event.type === "contentBlockDelta") text = (event.data.delta || {}).text || "";
        if (event.type === "chunk") {
          const inner = JSON.parse(atob(event.data.bytes));
          text = inner.outputText || "";
          if (inner["amazon-bedrock-invocationMetrics"]) {
            const m = inner["amazon-bedrock-invocationMetrics"];
            usage = {inputTokens: m.inputTokenCount, outputTokens: m.outputTokenCount};
            latency = m.invocationLatency;
          }
          if (inner.completionReason) stop = inner.completionReason;
        }
        if (text) {
          if (firstToken === null) firstToken = performance.now() - started;
          answer.textContent += text;
        }
        if (event.type === "messageStop") stop = event.data.stopReason;
        if (event.type === "metadata") { usage = event.data.usage; latency = (event.data.metrics || {}).latencyMs; }
      }
      if (chat) history.push({role: "assistant", content: [{text: answer.textContent}]});
      const parts = [];
      if (usage) parts.push(`${usage.inputTokens} input tokens`, `${usage.outputTokens} output tokens`);
      // Both measured here, from sending the request; the server's own latency (without the network) beside them.
      if (firstToken !== null) parts.push(`first token ${Math.round(firstToken)} ms`);
      parts.push(`total ${Math.round(performance.now() - started)} ms`);
      if (latency !== null && latency !== undefined) parts.push(`server latency ${latency} ms`);
      if (stop) parts.push(`stop: ${stop}`);
      stats.textContent = parts.join(" · ");
    } catch (error) {
      if (mode === "chat" && history.length && history[history.length - 1].role === "user") history.pop();
      answer.className = "turn error";
      answer.setAttribute("role", "alert");
      answer.textContent = error.message;
    }
  }

  const problem = document.getElementById("playground-error");
  function say(message) {
    problem.textContent = message;
    problem.hidden = !message;
  }

  field("mode").addEventListener("change", () => { offerModels(); say(""); refreshCode(); });
  form.addEventListener("input", refreshCode);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = value("prompt");
    if (!prompt) return;
    say(refusal());
    if (!problem.hidden) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await Promise.all(models().map((p) => runPane(p, prompt, value("mode"))));
    } finally {
      button.disabled = false;
      field("prompt").value = "";
      refreshCode();
      field("prompt").focus();
    }
  });
  const clear = form.querySelector("[data-clear]");
  if (clear) clear.addEventListener("click", () => {
    histories.forEach((h) => h.splice(0));
    panes.forEach((p) => { p.querySelector(".transcript").textContent = ""; p.querySelector(".stats").textContent = ""; });
  });
  offerModels();
  refreshCode();
}

/* -- an evaluation report framed in its job's page: the frame as tall as the report ----------------------- */

function fitFrame(frame) {
  const fit = () => {
    let doc = null;
    try { doc = frame.contentDocument; } catch (_) { /* another origin: the frame keeps its height */ }
    if (doc && doc.documentElement && doc.URL !== "about:blank" && doc.readyState === "complete") frame.style.height = `${doc.documentElement.scrollHeight + 4}px`;
  };
  frame.addEventListener("load", fit);
  window.addEventListener("resize", fit);
  fit();
}

/* -- live progress of a fine-tuning job, and its loss curve ------------------------------------------ */

function lossChart(target, points) {
  if (!window.uPlot || !points || !points.length) return null;
  target.textContent = "";
  const width = Math.min(target.clientWidth || 720, 760);
  return new uPlot({
    width, height: 280, title: "Training loss",
    scales: {x: {time: false}},
    axes: [{label: "step"}, {label: "loss"}],
    series: [{label: "step"}, {label: "training loss", stroke: "#0b5cad", width: 2, points: {show: points.length < 40}}],
  }, [points.map((p) => p[0]), points.map((p) => p[1])], target);
}

function jobProgress(node) {
  const name = node.dataset.jobProgress;
  const bar = node.querySelector("progress"), line = node.querySelector("[data-line]");
  const status = document.querySelector("[data-job-status]"), chart = node.querySelector(".chart");
  let plot = null, drawn = 0;
  const startedAs = status ? status.textContent : "";
  async function poll() {
    const response = await api("GET", `/model-customization-jobs/${encodeURIComponent(name)}`);
    if (!response.ok) { line.textContent = await apiError(response); return; }
    const job = await response.json();
    const p = job.progress || {};
    if (status) { status.textContent = job.status; status.className = `status ${job.status}`; }
    if (p.percent !== undefined) bar.value = p.percent;
    if (p.step !== undefined) {
      const speed = p.imagesPerSecond !== undefined ? `${p.imagesPerSecond} images/s` : `${p.tokensPerSecond} tokens/s`;
      line.textContent = `step ${p.step} of ${p.totalSteps} · epoch ${p.epoch} of ${p.epochs} · loss ${p.loss}` +
        ` · ${speed}` + (job.status === "InProgress" ? ` · about ${p.etaSeconds} s left` : "");
    } else if (job.status === "InProgress") {
      line.textContent = "Preparing the data and the base model…";
    }
    const curve = p.lossCurve || [];
    if (curve.length && curve.length !== drawn) {
      if (plot) plot.destroy();
      plot = lossChart(chart, curve);
      drawn = curve.length;
      chart.setAttribute("aria-label", `Training loss over ${curve.length} points, last ${curve[curve.length - 1][1]}`);
    }
    if (job.status === "InProgress" || job.status === "Stopping") {
      setTimeout(poll, 1500);
    } else {
      node.dataset.done = job.status;
      if (startedAs === "InProgress" || startedAs === "Stopping") {
        location.reload();  // the finished job's page has more to show: its custom model, final losses
        return;
      }
      if (job.failureMessage) line.textContent = job.failureMessage;
      const stop = document.querySelector("[data-stop]");
      if (stop) stop.hidden = true;
    }
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("playground");
  if (form) playground(form);
  document.querySelectorAll("[data-job-progress]").forEach(jobProgress);
  document.querySelectorAll("iframe.report-frame").forEach(fitFrame);
  document.querySelectorAll("form[data-confirm]").forEach((f) => f.addEventListener("submit", (event) => {
    if (!window.confirm(f.dataset.confirm)) event.preventDefault();
  }));
});
