// Drives a running Outcrop with the AWS SDK for JavaScript v3, exactly as an application would: the
// clients' default request handlers (bedrock-runtime's is NodeHttp2Handler, HTTP/2), credentials and
// region from the default provider chain (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, AWS_PROFILE),
// and nothing but the endpoint changed.
//
//   node drive.mjs '{"endpoint": "http://127.0.0.1:8600", "chatModel": "...", "embeddingModel": "..."}'
//
// Prints one JSON object: for each operation, {"ok": true, ...what it returned} or {"ok": false, "error":
// {name, message, status}}, so the Python side (tests/integration/frameworks/test_js_sdk.py) checks each
// operation on its own.

import { BedrockClient, ListFoundationModelsCommand } from "@aws-sdk/client-bedrock";
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  CountTokensCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";

const options = JSON.parse(process.argv[2]);
const { endpoint, chatModel, embeddingModel } = options;
// CountTokens names a base model, never an inference profile (as on Bedrock): `countModel` when given.
const countModel = options.countModel ?? chatModel;

// The one change an application makes: the endpoint.
const bedrock = new BedrockClient({ endpoint, maxAttempts: 1 });
const runtime = new BedrockRuntimeClient({ endpoint, maxAttempts: 1 });

const messages = [{ role: "user", content: [{ text: "What is the capital of France?" }] }];
const inferenceConfig = { maxTokens: 16, temperature: 0 };
const anthropicBody = {
  anthropic_version: "bedrock-2023-05-31",
  max_tokens: 16,
  temperature: 0,
  messages: [{ role: "user", content: "What is the capital of France?" }],
};

const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));

async function step(name, action) {
  try {
    return [name, { ok: true, ...(await action()) }];
  } catch (error) {
    return [name, {
      ok: false,
      error: {
        name: error.name ?? error.constructor?.name,
        message: String(error.message ?? error),
        code: error.code,
        status: error.$metadata?.httpStatusCode,
      },
    }];
  }
}

const steps = [
  ["listFoundationModels", async () => {
    const out = await bedrock.send(new ListFoundationModelsCommand({}));
    return { modelIds: out.modelSummaries.map((m) => m.modelId) };
  }],
  ["converse", async () => {
    const out = await runtime.send(new ConverseCommand({ modelId: chatModel, messages, inferenceConfig }));
    return {
      text: out.output.message.content[0].text,
      stopReason: out.stopReason,
      usage: out.usage,
      requestId: out.$metadata.requestId,
    };
  }],
  ["countTokens", async () => {
    const out = await runtime.send(new CountTokensCommand({ modelId: countModel, input: { converse: { messages } } }));
    return { inputTokens: out.inputTokens };
  }],
  ["converseStream", async () => {
    const out = await runtime.send(new ConverseStreamCommand({ modelId: chatModel, messages, inferenceConfig }));
    let text = "";
    const events = [];
    let usage;
    let stopReason;
    for await (const event of out.stream) {
      const kind = Object.keys(event)[0];
      events.push(kind);
      if (event.contentBlockDelta) text += event.contentBlockDelta.delta.text ?? "";
      if (event.messageStop) stopReason = event.messageStop.stopReason;
      if (event.metadata) usage = event.metadata.usage;
    }
    return { text, events, usage, stopReason };
  }],
  ["invokeModel", async () => {
    const out = await runtime.send(new InvokeModelCommand({
      modelId: chatModel,
      contentType: "application/json",
      accept: "application/json",
      body: JSON.stringify(anthropicBody),
    }));
    return { contentType: out.contentType, response: decode(out.body) };
  }],
  ["invokeModelWithResponseStream", async () => {
    const out = await runtime.send(new InvokeModelWithResponseStreamCommand({
      modelId: chatModel,
      contentType: "application/json",
      accept: "application/json",
      body: JSON.stringify(anthropicBody),
    }));
    const chunks = [];
    for await (const event of out.body) {
      if (event.chunk) chunks.push(decode(event.chunk.bytes));
    }
    return { chunks };
  }],
  ["embed", async () => {
    const out = await runtime.send(new InvokeModelCommand({
      modelId: embeddingModel,
      contentType: "application/json",
      accept: "application/json",
      body: JSON.stringify({ inputText: "Outcrop is Amazon Bedrock that you run yourself.", normalize: true }),
    }));
    const response = decode(out.body);
    return { dimension: response.embedding.length, inputTextTokenCount: response.inputTextTokenCount,
             norm: Math.hypot(...response.embedding) };
  }],
];

const results = {};
for (const [name, action] of steps) {
  const [key, value] = await step(name, action);
  results[key] = value;
}
bedrock.destroy();
runtime.destroy();
process.stdout.write(JSON.stringify(results) + "\n");
