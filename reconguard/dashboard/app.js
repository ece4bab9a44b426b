// reconguard ops dashboard: fetches /overview every few seconds and draws it with plain SVG.
// The token comes from the URL fragment (#token=...), which browsers never send to the server,
// and is kept in sessionStorage (this tab only). Every value is set as text, never as HTML.
"use strict";

const TOKEN_KEY = "reconguard.token";
const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = Math.max(1, Number(document.body.dataset.refreshSeconds) || 5) * 1000;
const CHART = { width: 520, height: 180, left: 56, right: 8, top: 10, bottom: 22 };

function takeTokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

const money = (v) => v === null || v === undefined ? "–" : "£" + Number(v).toLocaleString("en-GB",
  { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const pct = (v) => v === null || v === undefined ? "–" : Number(v).toFixed(2) + "%";
const time = (iso) => iso ? new Date(iso).toLocaleTimeString("en-GB") : "–";
const stamp = (iso) => iso ? new Date(iso).toLocaleString("en-GB") : "–";

function setStatus(text, isError = false) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = isError ? "status error" : "status";
}

// A line chart of (time, value) points, with optional horizontal threshold lines.
function lineChart({ points, key, label, kind, format, thresholds = [] }) {
  const { width, height, left, right, top, bottom } = CHART;
  const root = svg("svg", { class: "chart " + kind, viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": label, "data-kind": kind });
  root.appendChild(svg("title", {}, label));
  root.appendChild(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }));
  root.appendChild(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }));
  if (points.length === 0) {
    root.appendChild(svg("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, "no snapshots yet"));
    return root;
  }
  const xs = points.map((p) => Date.parse(p.t));
  const ys = points.map((p) => Number(p[key]));
  const limits = thresholds.map((t) => t.value);
  let yMin = Math.min(...ys, ...limits), yMax = Math.max(...ys, ...limits);
  if (yMax - yMin < 1e-9) { yMin -= 1; yMax += 1; }
  const pad = (yMax - yMin) * 0.05; yMin -= pad; yMax += pad;
  const xMin = xs[0], xMax = xs[xs.length - 1] > xs[0] ? xs[xs.length - 1] : xs[0] + 1;
  const sx = (x) => left + (x - xMin) / (xMax - xMin) * (width - left - right);
  const sy = (y) => top + (yMax - y) / (yMax - yMin) * (height - top - bottom);
  for (const t of thresholds) {
    root.appendChild(svg("line", { class: "threshold " + t.kind, x1: left, x2: width - right, y1: sy(t.value), y2: sy(t.value) }));
  }
  const d = xs.map((x, i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join(" ");
  root.appendChild(svg("path", { class: "series " + kind, d, "data-points": points.length }));
  root.appendChild(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, format(yMax)));
  root.appendChild(svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, format(yMin)));
  root.appendChild(svg("text", { x: left, y: height - 6 }, time(points[0].t)));
  root.appendChild(svg("text", { x: width - right, y: height - 6, "text-anchor": "end" }, time(points[points.length - 1].t)));
  return root;
}

function table(caption, columns, rows) {
  if (rows.length === 0) return el("p", { class: "none" }, caption + ": none");
  const node = el("table");
  node.appendChild(el("caption", {}, caption));
  const head = node.appendChild(el("tr"));
  for (const [title] of columns) head.appendChild(el("th", {}, title));
  for (const row of rows) {
    const line = node.appendChild(el("tr"));
    for (const [, value, numeric] of columns) line.appendChild(el("td", numeric ? { class: "num" } : {}, value(row)));
  }
  return node;
}

// The account's lock (from /locks), if it is locked after a liquidation.
function lockBanner(lock) {
  if (!lock) return el("p", { class: "trading open", "data-locked": "false" }, "Trading: open");
  const until = lock.ends === "next_broker_day" ? "the next broker day" : "an admin unlocks it";
  return el("p", { class: "trading locked", "data-locked": "true" },
    `LOCKED since ${stamp(lock.created_at)} (${lock.kind.replace("_", " ")} liquidation): ` +
    `new positions are closed until ${until}`);
}

function accountCard(account, lock) {
  const latest = account.latest;
  const card = el("article", { class: "account", "data-user": account.user_id });
  card.appendChild(el("h2", {}, account.display_name ? `${account.display_name} (${account.user_id})` : account.user_id));
  card.appendChild(lockBanner(lock));
  const figures = card.appendChild(el("div", { class: "figures" }));
  const breached = latest && latest.drawdown_percent >= account.critical_drawdown_percent;
  for (const [name, value, cls] of [
    ["equity", money(latest && latest.equity_gbp), ""],
    ["drawdown", pct(latest && latest.drawdown_percent), breached ? "breach" : ""],
    ["open positions", latest ? String(latest.open_positions_count) : "–", ""],
    ["open divergences", String(account.open_divergences.length), account.open_divergences.length ? "breach" : ""],
    ["last snapshot", stamp(latest && latest.created_at), ""],
  ]) {
    const item = figures.appendChild(el("span", {}, name + ": "));
    item.appendChild(el("b", cls ? { class: cls } : {}, value));
  }
  const charts = card.appendChild(el("div", { class: "charts" }));
  charts.appendChild(lineChart({ points: account.series, key: "equity_gbp", kind: "equity", format: money,
                                 label: `Equity of ${account.user_id} (GBP)` }));
  charts.appendChild(lineChart({ points: account.series, key: "drawdown_percent", kind: "drawdown", format: pct,
                                 label: `Drawdown of ${account.user_id} (%)`, thresholds: [
                                   { kind: "warning", value: account.warning_drawdown_percent },
                                   { kind: "critical", value: account.critical_drawdown_percent }] }));
  card.appendChild(table("Open divergences", [
    ["since", (r) => stamp(r.created_at)], ["symbol", (r) => r.symbol || "–"], ["ticket", (r) => r.mt5_position_id ?? "–"],
    ["reason", (r) => r.divergence_reason || "–"], ["volume", (r) => String(r.volume), true]], account.open_divergences));
  card.appendChild(table("Recent alerts", [
    ["time", (r) => stamp(r.created_at)], ["type", (r) => r.alert_type], ["action", (r) => r.action_taken],
    ["drawdown", (r) => pct(r.drawdown_percent), true], ["threshold", (r) => pct(r.threshold_percent), true],
    ["closed", (r) => String(r.positions_closed_count), true], ["loss", (r) => money(r.total_loss_gbp), true]],
    account.recent_alerts));
  card.appendChild(table("Recent closes", [
    ["time", (r) => stamp(r.created_at)], ["symbol", (r) => r.symbol || "–"], ["ticket", (r) => r.mt5_position_id ?? "–"],
    ["reason", (r) => r.close_reason || "–"], ["status", (r) => r.status], ["price", (r) => r.closed_price ?? "–", true],
    ["P&L", (r) => money(r.pnl_gbp), true]], account.recent_closes));
  return card;
}

function render(overview, locks) {
  const main = document.getElementById("accounts");
  const lockOf = new Map(locks.map((lock) => [lock.user_id, lock]));
  main.replaceChildren(...overview.accounts.map((account) => accountCard(account, lockOf.get(account.user_id))));
  if (overview.accounts.length === 0) main.appendChild(el("p", { class: "none" }, "No accounts yet."));
  document.body.dataset.renderedAt = overview.generated_at;
  setStatus(`${overview.accounts.length} account(s) · updated ${time(overview.generated_at)}`);
}

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("login").hidden = false;
  setStatus(message, true);
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { askForToken("an API token is needed"); return; }
  try {
    const response = await fetch("/overview", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (response.status === 401) { askForToken("the token was refused"); return; }
    if (!response.ok) { setStatus(`the API answered ${response.status}; retrying`, true); return; }
    document.getElementById("login").hidden = true;
    const locks = await fetch("/locks", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    render(await response.json(), locks.ok ? await locks.json() : []);
  } catch (error) {
    setStatus("the API is unreachable; retrying", true);
  }
}

document.getElementById("use-token").addEventListener("click", () => {
  const value = document.getElementById("token").value.trim();
  if (value) { sessionStorage.setItem(TOKEN_KEY, value); refresh(); }
});

takeTokenFromFragment();
refresh();
setInterval(refresh, REFRESH_MS);
