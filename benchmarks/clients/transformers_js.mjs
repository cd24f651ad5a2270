// transformers.js on an edgebert ONNX bundle, unchanged: the pipeline a web or Node app would call.
//
//   cd benchmarks/clients && ONNXRUNTIME_NODE_INSTALL=skip npm install   (without it onnxruntime-node's
//   install script downloads GPU files)
//   node transformers_js.mjs BUNDLE SENTENCES.txt [text-classification|feature-extraction] [fp32,q8,fp16]
//
// BUNDLE is the folder `edgebert export --format onnx` writes; SENTENCES.txt holds one sentence a line.
// Local files only (env.allowRemoteModels = false). For each dtype (transformers.js reads
// onnx/model.onnx for fp32, onnx/model_quantized.onnx for q8, onnx/model_fp16.onnx for fp16) it prints
// one JSON line: the token ids the pipeline's tokenizer gives (padding removed), and
//   text-classification: the pipeline's top label and score, and the logits of the pipeline's own
//                        model on the pipeline's own (padded) batch, as the pipeline computes them;
//   feature-extraction:  the pipeline's output with {pooling: 'mean', normalize: true}.
// benchmarks/clients.py runs it and compares with PyTorch; nothing here judges the numbers.

import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { env, pipeline } from '@huggingface/transformers';

const [bundleArg, sentencesFile, task = 'text-classification', dtypeList = 'fp32,q8,fp16'] = process.argv.slice(2);
if (!bundleArg || !sentencesFile) {
  console.error('usage: node transformers_js.mjs BUNDLE SENTENCES.txt [text-classification|feature-extraction] [fp32,q8,fp16]');
  process.exit(2);
}
const bundle = resolve(bundleArg);
env.allowRemoteModels = false;
env.localModelPath = dirname(bundle) + '/';
const texts = readFileSync(sentencesFile, 'utf8').split('\n').filter((line) => line.length > 0);
const version = JSON.parse(
  readFileSync(new URL('../package.json', import.meta.resolve('@huggingface/transformers')), 'utf8'),
).version;

/** Token ids per sentence without padding, as plain numbers (the tokenizer gives BigInt tensors). */
function unpadded(encoded) {
  const ids = encoded.input_ids.tolist();
  const mask = encoded.attention_mask.tolist();
  return ids.map((row, r) => row.filter((_, c) => Number(mask[r][c]) === 1).map(Number));
}

for (const dtype of dtypeList.split(',')) {
  const pipe = await pipeline(task, basename(bundle), { dtype });
  const encoded = pipe.tokenizer(texts, { padding: true, truncation: true }); // what the pipeline does
  const record = { client: 'transformers.js', version, dtype, task, ids: unpadded(encoded) };
  if (task === 'text-classification') {
    record.pipeline = await pipe(texts);
    record.logits = (await pipe.model(encoded)).logits.tolist();
  } else {
    record.embeddings = (await pipe(texts, { pooling: 'mean', normalize: true })).tolist();
  }
  console.log(JSON.stringify(record));
  await pipe.dispose();
}
