// Drives the collector's web UI in headless Chromium and prints what a person would see, as
// one JSON object, for the Rust test (collector/tests/collector/ui.rs) to check.
//
// usage: node check.mjs BASE_URL TRIGGER_ID OUT_DIR
import { chromium } from "playwright-core";

const [base, triggerId, outDir] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const out = {};
const cells = async (sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent.trim()));

// The list, then filtered by host through the form.
await page.goto(base + "/");
out.list_rows = (await page.$$("#snapshots tr.snapshot")).length;
await page.screenshot({ path: outDir + "/list.png", fullPage: true });
await page.fill("#filters input[name=host]", "web-2");
await Promise.all([page.waitForNavigation(), page.click("#filters button")]);
out.filtered_hosts = await cells("#snapshots tr.snapshot td:nth-child(2)");
out.filtered_url = page.url().replace(base, "");

// Open the first filtered snapshot from its link.
await Promise.all([page.waitForNavigation(), page.click("#snapshots tr.snapshot td a")]);
out.snapshot_title = (await page.textContent("h1")).trim();
out.coverage_rows = (await page.$$("#coverage tr")).length - 1;
out.first_syscall = await cells("#syscalls tr:nth-child(2) td");
out.trigger_fields = await cells("#trigger-fields td:first-child");
out.timeline_rects = (await page.$$("svg.timeline rect")).length;
out.timeline_titles = await page.$$eval("svg.timeline rect title", (els) =>
  [...new Set(els.map((e) => e.textContent))].sort());
out.histograms = await cells("h3");
// What opens the page: the findings, then the request's story.
out.first_h2 = await cells("h2");
out.findings = await cells("#findings li");
out.verdict = (await page.textContent("#verdict")).trim();
out.state_rects = await page.$$eval("svg.states rect.state", (els) =>
  els.map((e) => e.getAttribute("class").split(" ")[1]));
out.state_titles = await cells("svg.states rect.state title");
out.axis_ticks = (await page.$$("svg.states line.tick")).length;
out.legend = await cells("svg.states g.legend text");
out.blocked = await cells("#blocked tr:nth-child(2) td");
out.slowest_work = await cells("#slowest-work tr:nth-child(2) td");
out.worst_wakeups = (await page.$$("#worst-wakeups tr")).length - 1;
// Log-scale bars: the widths of the syscall histogram's bars.
out.hist_widths = await page.$$eval("table.hist", (ts) =>
  [...ts[0].querySelectorAll("rect.bar")].map((r) => Number(r.getAttribute("width"))));
out.hist_counts = await page.$$eval("table.hist", (ts) =>
  [...ts[0].querySelectorAll("td.num")].map((td) => Number(td.textContent)));
// Hovering a stretch shows its details, as a person would see them.
await page.hover("svg.states rect.state.blocked");
await page.screenshot({ path: outDir + "/story.png", clip: { x: 0, y: 0, width: 1400, height: 1000 } });
await page.screenshot({ path: outDir + "/snapshot.png", fullPage: true });
// The download link serves the file.
const href = await page.getAttribute("#downloads a", "href");
const resp = await page.request.get(base + href);
out.download_status = resp.status();
out.download_bytes = (await resp.body()).length;

// The group view: every host side by side, windows on one clock.
await page.goto(base + "/ui/triggers/" + triggerId);
out.group_hosts = await cells("#hosts .host h3");
out.alignment_bars = (await page.$$("#alignment rect")).length;
await page.screenshot({ path: outDir + "/group.png", fullPage: true });

await browser.close();
console.log(JSON.stringify(out));
