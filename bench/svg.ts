/**
 * docs/bench.svg: the results as small multiples, one panel per metric
 * (each metric has its own unit and scale, so one shared axis would flatten
 * half of them), one bar per contender in a fixed colour, the median on top
 * of the bar and the min–max range as a whisker. A contender that could not
 * be measured gets a grey "not measured" in place of its bar; the report's
 * footnotes say why.
 *
 * Plain SVG text with no scripts, fonts or external references, so it reads
 * the same in a browser, on GitHub and in an image viewer.
 *
 * @module
 */

import {
  type ContenderName,
  measures,
  type Metric,
  METRICS,
  type Results,
  summarize,
} from "./metrics.ts";

/** Bar colour per contender (tapir stands out; the kernel ceiling is neutral grey). */
export const COLORS: Record<ContenderName, string> = {
  tapir: "#e8590c",
  "tapir-nooffload": "#ffa94d",
  pasta: "#1c7ed6",
  slirp4netns: "#37b24d",
  veth: "#868e96",
};

const PANEL_W = 240;
const PANEL_H = 200;
const COLS = 4;
const TOP = 70;
const PLOT_TOP = 48; // inside a panel: room for the title and unit
const PLOT_BOTTOM = 28; // inside a panel: room for the contender names

/** Escapes text for SVG. */
function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A value printed compactly for a bar label. */
export function shortNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 10000) return `${(v / 1000).toFixed(1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** A contender's name under its bar: one or two lines that fit the bar's slot. */
function barLabel(c: ContenderName): string[] {
  if (c === "slirp4netns") return ["slirp"];
  if (c === "tapir-nooffload") return ["tapir", "no-offload"];
  return [c];
}

/** Splits a label into at most two lines near the middle, at ", " if possible. */
function titleLines(label: string): string[] {
  if (label.length <= 34) return [label];
  const comma = label.lastIndexOf(", ");
  if (comma > 0 && comma <= 40) return [label.slice(0, comma + 1), label.slice(comma + 2)];
  const space = label.lastIndexOf(" ", 34);
  return [label.slice(0, space), label.slice(space + 1)];
}

function panel(
  results: Results,
  m: Metric,
  all: readonly ContenderName[],
  noTranslator: readonly ContenderName[],
): string {
  const names = all.filter((c) => measures(m, c));
  const out: string[] = [];
  const lines = titleLines(m.label);
  lines.forEach((l, i) =>
    out.push(
      `<text x="${PANEL_W / 2}" y="${14 + i * 14}" text-anchor="middle" font-weight="bold">${
        esc(l)
      }</text>`,
    )
  );
  out.push(
    `<text x="${PANEL_W / 2}" y="${16 + lines.length * 14}" text-anchor="middle" fill="#555">${
      esc(`${m.unit}, ${m.better} is better`)
    }</text>`,
  );
  const sums = names.map((c) => summarize(results.values(m.id, c)));
  const top = Math.max(0, ...sums.map((s) => s?.max ?? 0)) * 1.18 || 1;
  const plotH = PANEL_H - PLOT_TOP - PLOT_BOTTOM;
  const baseY = PANEL_H - PLOT_BOTTOM;
  const slot = (PANEL_W - 20) / names.length;
  const barW = Math.min(36, slot * 0.6);
  out.push(
    `<line x1="10" y1="${baseY}" x2="${PANEL_W - 10}" y2="${baseY}" stroke="#333" />`,
  );
  names.forEach((c, i) => {
    const cx = 10 + slot * (i + 0.5);
    const s = sums[i];
    const label = barLabel(c);
    const small = label.length > 1 ? ' font-size="9"' : "";
    label.forEach((l, k) =>
      out.push(
        `<text x="${cx}" y="${baseY + 14 + 10 * k}" text-anchor="middle"${small}>${esc(l)}</text>`,
      )
    );
    if (!s) {
      // A kernel-only contender has no translator to measure: say so, not "missing".
      const words = m.translatorOnly && noTranslator.includes(c)
        ? ["no", "translator"]
        : ["not", "measured"];
      words.forEach((w, k) =>
        out.push(
          `<text x="${cx}" y="${baseY - 18 + 11 * k}" text-anchor="middle" fill="#999" ` +
            `font-size="9">${w}</text>`,
        )
      );
      return;
    }
    const h = (s.median / top) * plotH;
    const y = baseY - h;
    out.push(
      `<rect x="${cx - barW / 2}" y="${y.toFixed(1)}" width="${barW}" height="${
        h.toFixed(1)
      }" fill="${COLORS[c]}" />`,
    );
    if (s.n > 1 && s.max > s.min) {
      const y1 = baseY - (s.max / top) * plotH;
      const y2 = baseY - (s.min / top) * plotH;
      out.push(
        `<line x1="${cx}" y1="${y1.toFixed(1)}" x2="${cx}" y2="${y2.toFixed(1)}" stroke="#222" />`,
        `<line x1="${cx - 5}" y1="${y1.toFixed(1)}" x2="${cx + 5}" y2="${
          y1.toFixed(1)
        }" stroke="#222" />`,
        `<line x1="${cx - 5}" y1="${y2.toFixed(1)}" x2="${cx + 5}" y2="${
          y2.toFixed(1)
        }" stroke="#222" />`,
      );
    }
    const labelY = Math.min(y, baseY - (s.max / top) * plotH) - 4;
    out.push(
      `<text x="${cx}" y="${labelY.toFixed(1)}" text-anchor="middle">${
        esc(shortNumber(s.median))
      }</text>`,
    );
  });
  return out.join("\n");
}

/**
 * The whole chart for the contenders in `names`, titled `title`;
 * `noTranslator` are the kernel-only contenders (no cost to draw).
 */
export function renderSvg(
  results: Results,
  names: readonly ContenderName[],
  noTranslator: readonly ContenderName[],
  title: string,
): string {
  const charted = METRICS.filter((m) => m.chart);
  const rows = Math.ceil(charted.length / COLS);
  const width = COLS * PANEL_W + 20;
  const height = TOP + rows * PANEL_H + 10;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff" />`,
    `<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  let lx = 10;
  for (const c of names) {
    out.push(
      `<rect x="${lx}" y="36" width="12" height="12" fill="${COLORS[c]}" />`,
      `<text x="${lx + 16}" y="46">${esc(c)}</text>`,
    );
    lx += 30 + c.length * 7;
  }
  out.push(
    `<text x="${lx + 10}" y="46" fill="#555">bar: median; whisker: min–max over repetitions</text>`,
  );
  charted.forEach((m, i) => {
    const x = 10 + (i % COLS) * PANEL_W;
    const y = TOP + Math.floor(i / COLS) * PANEL_H;
    out.push(
      `<g transform="translate(${x},${y})">`,
      `<rect x="2" y="2" width="${PANEL_W - 4}" height="${
        PANEL_H - 4
      }" fill="none" stroke="#ddd" />`,
      panel(results, m, names, noTranslator),
      "</g>",
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
