// The official `openai` Node SDK against Hanse: `node openai.mjs <scenario>`.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";
import { API_KEY, BASE_URL, MODEL, OVERFLOW, main } from "./common.mjs";

const client = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 120_000 });
const HELLO = [{ role: "user", content: "Name three Hanseatic cities." }];
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 40 } },
      required: ["city"],
      additionalProperties: false,
    },
  },
};
// Bounds on both fields: the answer must keep them, not only the types.
const City = z.object({ name: z.string().min(1).max(20), founded: z.number().int().min(800).max(2025) });

async function failure(call) {
  try {
    await call();
  } catch (error) {
    return {
      isAPIError: error instanceof OpenAI.APIError,
      isAuthenticationError: error instanceof OpenAI.AuthenticationError,
      isNotFoundError: error instanceof OpenAI.NotFoundError,
      isBadRequestError: error instanceof OpenAI.BadRequestError,
      status: error.status,
      code: error.code,
      type: error.type,
      param: error.param,
      message: error.message,
    };
  }
  return null;
}

await main({
  async create() {
    const completion = await client.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 8 });
    return completion;
  },
  async stream() {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: HELLO,
      max_tokens: 8,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
  },
  async tools() {
    const messages = [{ role: "user", content: "What is the weather in Hamburg?" }];
    const first = await client.chat.completions.create({
      model: MODEL,
      messages,
      tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 80,
    });
    const message = first.choices[0].message;
    // The documented follow-up: the assistant message as the SDK returned it, then each tool's result.
    messages.push(message);
    for (const call of message.tool_calls ?? []) {
      messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify({ temperature: 11 }) });
    }
    const second = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER], max_tokens: 12 });
    return { first, second };
  },
  async toolsStream() {
    const stream = client.chat.completions.stream({
      model: MODEL,
      messages: [{ role: "user", content: "What is the weather in Lübeck?" }],
      tools: [WEATHER],
      tool_choice: "required",
      max_tokens: 80,
    });
    // The helper's event for each piece of a tool call's arguments as it arrives.
    let argumentPieces = 0;
    stream.on("tool_calls.function.arguments.delta", () => argumentPieces++);
    const completion = await stream.finalChatCompletion();
    return { completion, argumentPieces };
  },
  async parse() {
    const completion = await client.chat.completions.parse({
      model: MODEL,
      messages: [{ role: "user", content: "Tell me about Lübeck." }],
      response_format: zodResponseFormat(City, "city"),
      max_tokens: 60,
    });
    return { parsed: completion.choices[0].message.parsed, finish_reason: completion.choices[0].finish_reason };
  },
  async errors() {
    const stranger = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: "sk-mel-not-a-key", maxRetries: 0 });
    return {
      badKey: await failure(() => stranger.chat.completions.create({ model: MODEL, messages: HELLO, max_tokens: 2 })),
      unknownModel: await failure(() =>
        client.chat.completions.create({ model: "no-such-model", messages: HELLO, max_tokens: 2 }),
      ),
      overflow: await failure(() =>
        client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: OVERFLOW }], max_tokens: 2 }),
      ),
    };
  },
});
