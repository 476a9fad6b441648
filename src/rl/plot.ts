// A small dependency-free SVG line plot (accuracy against wall time).
export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

const COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function accuracySvg(series: Series[], o: { title: string; xLabel: string; yLabel: string; width?: number; height?: number }): string {
  const W = o.width ?? 720, H = o.height ?? 420, L = 70, R = 160, T = 40, B = 55;
  const xs = series.flatMap((s) => s.points.map((p) => p.x)), ys = series.flatMap((s) => s.points.map((p) => p.y));
  const xMax = Math.max(1e-9, ...xs) * 1.05;
  const yMin = Math.max(0, Math.min(1, ...ys) - 0.05), yMax = Math.min(1, Math.max(0, ...ys) + 0.05);
  const sx = (x: number) => L + (x / xMax) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - yMin) / Math.max(1e-9, yMax - yMin)) * (H - T - B);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(o.title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 15}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`,
    `<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${(T + H - B) / 2})">${escapeXml(o.yLabel)}</text>`];
  for (let i = 0; i <= 5; i++) {
    const x = (xMax * i) / 5, y = yMin + ((yMax - yMin) * i) / 5;
    out.push(`<text x="${sx(x)}" y="${H - B + 18}" text-anchor="middle">${x.toFixed(0)}</text>`);
    out.push(`<text x="${L - 8}" y="${sy(y) + 4}" text-anchor="end">${(100 * y).toFixed(0)}%</text>`);
    out.push(`<line x1="${L}" y1="${sy(y)}" x2="${W - R}" y2="${sy(y)}" stroke="#eee"/>`);
  }
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = s.points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>`);
    for (const p of s.points) out.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${c}"/>`);
    out.push(`<rect x="${W - R + 15}" y="${T + 20 * i}" width="14" height="3" fill="${c}"/>`);
    out.push(`<text x="${W - R + 35}" y="${T + 20 * i + 5}">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
