// Shared by the scenario scripts: the gateway's address from the environment, and the JSON report.
export const BASE_URL = process.env.HANSE_BASE_URL;
export const API_KEY = process.env.HANSE_API_KEY;
export const MODEL = process.env.HANSE_MODEL ?? "smollm2-135m";
// Over the embedded model's 8192-token window, whatever the tokenizer makes of it.
export const OVERFLOW = "ship ".repeat(9000);

// Runs the scenario named on the command line; prints {ok, result} or {ok: false, error} as one JSON line.
export async function main(scenarios) {
  const name = process.argv[2];
  const scenario = scenarios[name];
  if (!scenario) {
    console.log(JSON.stringify({ ok: false, error: { name: "UnknownScenario", message: name } }));
    process.exitCode = 2;
    return;
  }
  try {
    console.log(JSON.stringify({ ok: true, result: await scenario() }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: describe(error) }));
  }
}

// What a test needs to know about a thrown error: its class chain and what the SDK parsed out of it.
export function describe(error) {
  const classes = [];
  for (let proto = Object.getPrototypeOf(error); proto && proto.constructor !== Object; proto = Object.getPrototypeOf(proto)) {
    classes.push(proto.constructor.name);
  }
  return {
    name: error?.name,
    classes,
    message: String(error?.message ?? error),
    status: error?.status ?? error?.statusCode,
    code: error?.code,
    type: error?.type,
    isRetryable: error?.isRetryable,
    responseBody: error?.responseBody,
    cause: error?.cause ? String(error.cause?.message ?? error.cause) : undefined,
  };
}
