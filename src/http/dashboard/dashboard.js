// godown's dashboard: one store's stock, low stock, live orders, today's sales, top
// sellers, velocity and reorder list, from the HTTP API with the token kept in this tab
// (sessionStorage). No framework, nothing from other hosts (the page's CSP forbids it).
"use strict";

const KEY = { store: "godown.store", token: "godown.token" };
/// Events shown in the live feed.
const FEED_MAX = 30;
/// Changes arrive in bursts (an order moves several products): refresh once per burst.
const REFRESH_DELAY_MS = 300;
/// Wait before reconnecting a dropped event stream.
const RECONNECT_MS = 2000;

const $ = (id) => document.getElementById(id);
const state = { products: [], sort: { key: "product_name", asc: true }, chartProduct: null, lastEventId: 0 };

function session() {
  return { store: sessionStorage.getItem(KEY.store), token: sessionStorage.getItem(KEY.token) };
}

async function api(path, accept = "application/json") {
  const { token } = session();
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token}`, Accept: accept } });
  if (!r.ok) {
    let why = `${r.status}`;
    try { why = (await r.json()).message || why; } catch (_) { /* not JSON */ }
    const e = new Error(why);
    e.status = r.status;
    throw e;
  }
  return accept === "application/json" ? r.json() : r.blob();
}

const storePath = () => encodeURIComponent(session().store);
const fmtQty = (q) => (Number.isInteger(q) ? String(q) : q.toFixed(3).replace(/0+$/, ""));
const fmtMoney = (m) => `₹${m.toLocaleString("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---------- panels ----------

async function loadToday() {
  const t = await api(`/api/v1/stores/${storePath()}/analytics?days=1`);
  $("today-revenue").textContent = fmtMoney(t.revenue);
  $("today-orders").textContent = String(t.orders);
  $("today-units").textContent = fmtQty(t.units);
}

async function loadLow() {
  const low = await api(`/api/v1/stores/${storePath()}/alerts/low-stock`);
  $("low-list").replaceChildren(...low.items.map((p) =>
    el("li", { "data-product": p.product_id }, `${p.product_name}: ${fmtQty(p.current_stock)} left (alert at ${fmtQty(p.low_stock_threshold)})`)));
  if (!low.items.length) $("low-list").replaceChildren(el("li", { class: "muted" }, "Nothing is low."));
}

async function loadTop() {
  const a = await api(`/api/v1/stores/${storePath()}/analytics?days=28`);
  $("top-list").replaceChildren(...a.top_sellers.map((t) =>
    el("li", {}, `${t.product_name} — ${fmtQty(t.units)} (${fmtMoney(t.revenue)})`)));
  if (!state.chartProduct && a.top_sellers.length) state.chartProduct = a.top_sellers[0].product_id;
}

async function loadReorder() {
  const r = await api(`/api/v1/stores/${storePath()}/reorder`);
  $("reorder-rows").replaceChildren(...r.items.map((i) => el("tr", {},
    el("td", {}, i.product_name), el("td", { class: "num" }, fmtQty(i.current_stock)),
    el("td", { class: "num" }, fmtQty(i.reorder_point)), el("td", { class: "num" }, fmtQty(i.suggested_reorder_quantity)))));
}

async function downloadReorder() {
  const blob = await api(`/api/v1/stores/${storePath()}/reorder`, "text/csv");
  const a = el("a", { href: URL.createObjectURL(blob), download: `reorder-${session().store}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
}

async function loadStock() {
  const all = [];
  let after = "";
  do {
    const page = await api(`/api/v1/inventory/products/${storePath()}?limit=1000&after=${encodeURIComponent(after)}`);
    all.push(...page.items);
    after = page.next_after || "";
  } while (after);
  state.products = all;
  renderStock();
}

function renderStock() {
  const q = $("search").value.trim().toLowerCase();
  const { key, asc } = state.sort;
  const rows = state.products
    .filter((p) => !q || p.product_name.toLowerCase().includes(q) || p.product_id.toLowerCase().includes(q))
    .sort((a, b) => {
      const x = a[key] ?? "", y = b[key] ?? "";
      const c = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
  $("stock-rows").replaceChildren(...rows.map((p) => {
    const low = p.current_stock <= p.low_stock_threshold;
    const name = el("td", {}, p.product_name);
    if (low) name.append(el("span", { class: "badge" }, "LOW"));
    const tr = el("tr", { "data-product": p.product_id, class: low ? "low" : "" }, name,
      el("td", {}, p.category || ""), el("td", { class: "num" }, `${fmtQty(p.current_stock)} ${p.unit}`),
      el("td", { class: "num" }, fmtMoney(p.unit_price)));
    tr.addEventListener("click", () => { state.chartProduct = p.product_id; loadChart().catch(report); });
    return tr;
  }));
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === key);
    th.classList.toggle("asc", th.dataset.sort === key && asc);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/// The chosen product's units a day over 28 days, as bars (inline SVG).
async function loadChart() {
  if (!state.chartProduct) return;
  const a = await api(`/api/v1/inventory/products/${storePath()}/${encodeURIComponent(state.chartProduct)}/analytics`);
  const p = state.products.find((x) => x.product_id === state.chartProduct);
  $("velocity-product").textContent = `${p ? p.product_name : a.product_id}: ${fmtQty(a.velocity_per_day)} a day, forecast ${fmtQty(a.forecast_next_7d)} in 7 days`;
  const W = 1120, H = 150, pad = 18, n = a.daily.length;
  const max = Math.max(1, ...a.daily.map((d) => d.units));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H + pad}`, role: "img", "aria-label": "units a day" });
  root.append(svg("line", { class: "axis", x1: 0, y1: H, x2: W, y2: H }));
  a.daily.forEach((d, i) => {
    const h = Math.max(0, d.units) / max * (H - 10);
    const bar = svg("rect", { class: "bar", x: i * (W / n) + 1, y: H - h, width: W / n - 2, height: h });
    bar.append(svg("title", {}));
    bar.lastChild.textContent = `${d.date}: ${fmtQty(d.units)}`;
    root.append(bar);
  });
  for (const i of [0, n - 1]) {
    const t = svg("text", { x: i === 0 ? 0 : W, y: H + 13, "text-anchor": i === 0 ? "start" : "end" });
    t.textContent = a.daily[i].date;
    root.append(t);
  }
  $("chart").replaceChildren(root);
}

// ---------- live orders ----------

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refreshAll().catch(report), REFRESH_DELAY_MS);
}

function showEvent(e) {
  if (!e.type.startsWith("order.")) return;
  const o = e.data;
  const when = new Date(e.created_at).toLocaleString();
  const items = (o.items || []).map((i) => `${fmtQty(i.quantity)} × ${i.product_name}`).join(", ");
  const li = el("li", { "data-order": o.order_id, "data-type": e.type },
    el("strong", {}, e.type.replace("order.", "")), ` ${o.order_id} ${fmtMoney(o.total_amount)} — ${items} `,
    el("span", { class: "muted" }, when));
  $("feed").prepend(li);
  while ($("feed").children.length > FEED_MAX) $("feed").lastChild.remove();
}

/// Whether the store has an event after `id`.
async function hasAfter(id) {
  const page = await api(`/api/v1/stores/${storePath()}/events?after=${id}&limit=1`);
  return page.items.length > 0;
}

/// The newest event id, found with about 2·log₂(id) one-event pages (the API lists
/// events oldest first), so that the feed starts near now instead of replaying every kept
/// event (up to 200,000 of them).
async function newestEventId() {
  let low = 0, high = 1;
  while (await hasAfter(high)) { low = high; high *= 2; }
  while (high - low > 1) {
    const mid = Math.floor((low + high) / 2);
    if (await hasAfter(mid)) low = mid; else high = mid;
  }
  return (await hasAfter(low)) ? high : low;
}

/// Reads the store's event stream (Server-Sent Events over fetch, so that the token goes
/// in a header) from the last few kept events on; reconnects from the last id it saw.
async function follow() {
  const { token } = session();
  const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
  if (state.lastEventId) headers["Last-Event-ID"] = String(state.lastEventId);
  try {
    const r = await fetch(`/api/v1/stores/${storePath()}/events`, { headers });
    if (!r.ok) throw new Error(`events: ${r.status}`);
    $("live-state").textContent = "live";
    $("live-state").classList.add("on");
    const reader = r.body.getReader();
    const text = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += text.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        const e = JSON.parse(data);
        state.lastEventId = e.id;
        showEvent(e);
        refreshSoon();
      }
    }
  } catch (err) {
    console.warn(err);
  }
  $("live-state").textContent = "reconnecting";
  $("live-state").classList.remove("on");
  if (session().token) setTimeout(follow, RECONNECT_MS);
}

// ---------- start ----------

async function refreshAll() {
  await Promise.all([loadToday(), loadLow(), loadTop(), loadReorder(), loadStock()]);
  await loadChart();
}

function report(err) {
  console.error(err);
  if (err.status === 401 || err.status === 403 || err.status === 404) {
    signOut(`Could not open the store: ${err.message}`);
  }
}

function signOut(why = "") {
  sessionStorage.removeItem(KEY.token);
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why;
}

async function open() {
  const store = await api(`/api/v1/stores/${storePath()}`);
  $("store-name").textContent = store.name;
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
  await refreshAll();
  state.lastEventId = Math.max(0, (await newestEventId()) - FEED_MAX);
  follow();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY.store, $("store-id").value.trim());
    sessionStorage.setItem(KEY.token, $("token").value);
    open().catch(report);
  });
  $("logout").addEventListener("click", () => signOut());
  $("search").addEventListener("input", renderStock);
  $("reorder-csv").addEventListener("click", () => downloadReorder().catch(report));
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = { key, asc: state.sort.key === key ? !state.sort.asc : true };
      renderStock();
    });
  }
  const { store, token } = session();
  const fromUrl = new URLSearchParams(location.search).get("store");
  $("store-id").value = store || fromUrl || "";
  if (store && token) open().catch(report);
});
