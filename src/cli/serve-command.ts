// `wst-dash serve`: an OpenAI-compatible server over a model folder, until SIGINT/SIGTERM (drained).
import { UsageError, parseDevice, parseIntArg } from './args.js';

export async function serveCommand(values: Record<string, unknown>): Promise<void> {
  if (!values.model) throw new UsageError('--model DIR is required');
  const keyEnv = values['api-key-env'] as string | undefined;
  if (keyEnv && !process.env[keyEnv]) throw new UsageError(`--api-key-env: $${keyEnv} is not set`);
  const port = values.port === undefined ? 8080 : parseIntArg(values.port as string, '--port', 0);
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const maxBatch = values['max-batch'] === undefined ? 64 : parseIntArg(values['max-batch'] as string, '--max-batch');
  const maxQueue = values['max-queue'] === undefined ? 1024 : parseIntArg(values['max-queue'] as string, '--max-queue');
  const { Model } = await import('../models/model.js');
  const { serve } = await import('../serving/server.js');
  const model = await Model.load(values.model as string, { device: parseDevice(values) });
  const s = await serve(model, {
    host: (values.host as string | undefined) ?? '127.0.0.1', port, maxBatch, maxQueue, apiKey: keyEnv ? process.env[keyEnv] : undefined,
    modelName: (values.name as string | undefined) ?? 'wst-dash', log: (l) => console.error(l),
  });
  console.error(`serving ${values.model as string} as "${(values.name as string | undefined) ?? 'wst-dash'}" at ${s.url} (Ctrl-C drains and stops)`);
  console.log(JSON.stringify({ url: s.url }));
  await new Promise<void>((resolve) => {
    const stop = () => void s.close().then(resolve);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
