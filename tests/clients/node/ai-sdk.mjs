// The Vercel AI SDK against Hanse: `node ai-sdk.mjs <provider> <scenario>`, provider `compatible`
// (@ai-sdk/openai-compatible) or `openai` (@ai-sdk/openai, its Chat Completions model).
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, generateObject, generateText, Output, streamObject, streamText, tool } from "ai";
import { z } from "zod";
import { API_KEY, BASE_URL, MODEL, OVERFLOW, describe, main } from "./common.mjs";

function provider(name, apiKey) {
  if (name === "openai") {
    // `openai(id)` would call the Responses API; Hanse serves Chat Completions: `.chat(id)`.
    return createOpenAI({ baseURL: `${BASE_URL}/v1`, apiKey }).chat;
  }
  // includeUsage: usage in streams; supportsStructuredOutputs: response_format json_schema, not json_object.
  const compatible = createOpenAICompatible({
    name: "hanse",
    baseURL: `${BASE_URL}/v1`,
    apiKey,
    includeUsage: true,
    supportsStructuredOutputs: true,
  });
  return (id) => compatible.chatModel(id);
}

const which = process.argv.splice(2, 1)[0];
const model = provider(which, API_KEY)(MODEL);
// Bounds on both fields: the answer must keep them, not only the types.
const City = z.object({ name: z.string().min(1).max(20), founded: z.number().int().min(800).max(2025) });
const PROMPT = "Name three Hanseatic cities.";
const getWeather = tool({
  description: "Current weather in a city",
  inputSchema: z.object({ city: z.string().max(40) }),
  execute: async () => ({ temperature: 11 }),
});

async function failure(call) {
  try {
    await call();
  } catch (error) {
    return { ...describe(error), isAPICallError: APICallError.isInstance(error) };
  }
  return null;
}

await main({
  async create() {
    const result = await generateText({ model, prompt: PROMPT, maxOutputTokens: 8, maxRetries: 0 });
    return { text: result.text, finishReason: result.finishReason, usage: result.usage };
  },
  async stream() {
    const result = streamText({ model, prompt: PROMPT, maxOutputTokens: 8, maxRetries: 0 });
    const parts = [];
    for await (const part of result.textStream) parts.push(part);
    return { parts, finishReason: await result.finishReason, usage: await result.usage };
  },
  async tools() {
    const messages = [{ role: "user", content: "What is the weather in Hamburg?" }];
    const tools = { get_weather: getWeather };
    const first = await generateText({
      model,
      messages,
      tools,
      toolChoice: { type: "tool", toolName: "get_weather" },
      maxOutputTokens: 80,
      maxRetries: 0,
    });
    // The documented follow-up: the response's own messages (tool call, tool result), then ask again.
    messages.push(...first.response.messages);
    const second = await generateText({ model, messages, tools, maxOutputTokens: 12, maxRetries: 0 });
    return {
      first: { finishReason: first.finishReason, toolCalls: first.toolCalls, toolResults: first.toolResults },
      appended: first.response.messages.map((message) => message.role),
      second: { finishReason: second.finishReason, text: second.text, toolCalls: second.toolCalls },
    };
  },
  async toolsStream() {
    const result = streamText({
      model,
      prompt: "What is the weather in Lübeck?",
      tools: { get_weather: getWeather },
      toolChoice: "required",
      maxOutputTokens: 80,
      maxRetries: 0,
    });
    const errors = [];
    let inputDeltas = 0;
    for await (const part of result.fullStream) {
      if (part.type === "error") errors.push(describe(part.error));
      if (part.type === "tool-input-delta") inputDeltas++;
    }
    return { errors, inputDeltas, finishReason: await result.finishReason, toolCalls: await result.toolCalls };
  },
  async object() {
    const result = await generateObject({
      model,
      schema: City,
      prompt: "Tell me about Lübeck.",
      maxOutputTokens: 60,
      maxRetries: 0,
    });
    return { object: result.object, finishReason: result.finishReason };
  },
  async streamObject() {
    const result = streamObject({ model, schema: City, prompt: "Tell me about Lübeck.", maxOutputTokens: 60, maxRetries: 0 });
    const partials = [];
    for await (const partial of result.partialObjectStream) partials.push(partial);
    return { partials: partials.length, object: await result.object, finishReason: await result.finishReason };
  },
  async output() {
    const result = await generateText({
      model,
      output: Output.object({ schema: City }),
      prompt: "Tell me about Lübeck.",
      maxOutputTokens: 60,
      maxRetries: 0,
    });
    return { output: result.output, finishReason: result.finishReason };
  },
  async errors() {
    const call = (chosen, prompt) => () =>
      generateText({ model: chosen, prompt, maxOutputTokens: 2, maxRetries: 0 });
    return {
      badKey: await failure(call(provider(which, "sk-mel-not-a-key")(MODEL), PROMPT)),
      unknownModel: await failure(call(provider(which, API_KEY)("no-such-model"), PROMPT)),
      overflow: await failure(call(model, OVERFLOW)),
    };
  },
});
