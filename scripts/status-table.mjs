#!/usr/bin/env node
// Prints the README's status table (markdown) from the JSON files bench/reproduce.sh wrote:
//   node scripts/status-table.mjs DIR     (DIR/dash.json, DIR/wst.json, DIR/kernels.json)
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/status-table.mjs DIR');
  process.exit(2);
}
const read = (name) => {
  const file = path.join(dir, name);
  if (!existsSync(file)) return null;
  const text = readFileSync(file, 'utf8').trim().split('\n').pop();
  try {
    return JSON.parse(text);
  } catch (e) {
    console.error(`${file}: not JSON (${e.message})`);
    process.exit(1);
  }
};
const pct = (x, d = 1) => `${(100 * x).toFixed(d)} %`;
const pts = (x) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
const dash = read('dash.json'), wst = read('wst.json'), kernels = read('kernels.json');
const rows = [];
if (dash) {
  const a = dash.arms;
  const st = dash.settings;
  rows.push([`DASH wall time vs per-micro-batch GRPO, built-in task, ${st.steps} steps (median over ${st.seeds} RL seed${st.seeds > 1 ? 's' : ''})`, `**${pct(dash.time_reduction_vs_grpo)} less** (DASH ${a.dash.seconds.toFixed(1)} s, GRPO ${a.grpo.seconds.toFixed(1)} s)`, '≥ 83 % less']);
  if (dash.time_reduction_vs_decoupled !== undefined) rows.push(['DASH wall time vs decoupled GRPO', `${pct(dash.time_reduction_vs_decoupled)} less`, '—']);
  const d = dash.accuracy_diff_vs_grpo;
  const acc = (arm) => `${pct(arm.accuracy_mean)} ± ${(100 * arm.accuracy_sd).toFixed(1)}`;
  rows.push([`held-out accuracy (mean ± sd over ${d.n} RL seeds, each the mean of two held-out sets of ${st.evalProblems} draws); SFT start ${pct(dash.sft.accuracy)} (set A)`, `DASH ${acc(a.dash)}, GRPO ${acc(a.grpo)}${a.grpo_decoupled ? `, decoupled ${acc(a.grpo_decoupled)}` : ''}`, '—']);
  rows.push(['DASH − per-micro-batch GRPO accuracy, paired over seeds (95 % t-interval)', `${pts(d.mean)} points [${pts(d.low)}, ${pts(d.high)}]`, 'mean ≥ −2 points']);
}
if (wst) {
  const t = wst.teachers;
  rows.push(['WST demo: student accuracy alone / best fixed instruction / untrained / strong / trained teacher', `${pct(t.none.accuracy)} / ${pct(t.fixed_best.accuracy)} / ${pct(t.untrained.accuracy)} / ${pct(t.strong.accuracy)} / **${pct(t.trained.accuracy)}**`, '—']);
  const gain = wst.relative_gain === null ? 'undefined (the student alone scores 0)' : `${pts(wst.relative_gain)} %`;
  rows.push(['WST: trained teacher\'s relative gain over no instruction; over the best fixed instruction', `${gain}; ${pts(wst.gain_over_fixed_best)} points`, '≥ +50 %; ≥ +10 points']);
  rows.push(['WST: misleading fraction, trained / untrained / strong teacher', `${pct(t.trained.misleading)} / ${pct(t.untrained.misleading)} / ${pct(t.strong.misleading)}`, 'trained below both']);
  rows.push([`WST: teacher training, DASH vs per-micro-batch GRPO (same ${wst.settings.steps} steps)`, `${pct(wst.time_reduction_vs_grpo)} less; student accuracy ${pct(wst.accuracy_dash)} vs ${pct(wst.accuracy_grpo)}`, '≥ 80 % less; within 2 points']);
  rows.push(['WST demo wall time (warm-ups included)', `${wst.seconds.toFixed(0)} s`, '≤ 300 s']);
}
if (kernels) {
  for (const threads of [...new Set(kernels.gemm.map((g) => g.threads))]) {
    const rs = kernels.gemm.filter((g) => g.threads === threads && g.ratio !== null).map((g) => g.ratio);
    if (rs.length) rows.push([`GEMM vs OpenBLAS, ${threads} thread${threads > 1 ? 's' : ''} (${rs.length} shapes, \`bench kernels --quick\`)`, `${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)}×`, '≥ 0.9×']);
  }
}
const m = kernels?.machine;
const cpu = m?.cpu ?? os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`Measured ${new Date().toISOString().slice(0, 10)} by \`bash bench/reproduce.sh\` from an empty cache on ${cpu}, ` +
  `${m?.cores ?? os.cpus().length} cores, ISA path ${m?.isa ?? process.env.WST_DASH_ISA ?? 'native'}, Node ${process.version}.\n`);
console.log('| what | measured | target |');
console.log('| --- | --- | --- |');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
