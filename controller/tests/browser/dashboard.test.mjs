// The DevDB dashboard in headless Chromium, as kate, bob and an admin would use it. Started by
// run.sh, which runs `devdb up` with tokens and restores the project "shop" for kate. Every
// step asserts what a person would check; a screenshot of each page goes to $SCREENSHOTS.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const url = process.env.DEVDB_URL;
const [admin, kate, bob] = [process.env.ADMIN_TOKEN, process.env.KATE_TOKEN, process.env.BOB_TOKEN];
const shots = process.env.SCREENSHOTS;
const step = (text) => console.log(`browser: ${text}`);

/** Runs a psql command line as copied from the page, plus `args`, through the proxy. */
function psql(copied, ...args) {
  const uri = copied.match(/^psql "(postgresql:\/\/[^"]+)"$/)?.[1];
  assert.ok(uri, `a psql command with a URI: ${copied}`);
  // *.db.browser.test does not resolve here: libpq still sends the name as SNI.
  const env = { ...process.env, PGHOSTADDR: "127.0.0.1", PGCONNECT_TIMEOUT: "30" };
  return execFileSync("psql", [uri, "-X", "-At", ...args], { env, encoding: "utf8" }).trim();
}

function pgbench(uri, ...args) {
  const env = { ...process.env, PGHOSTADDR: "127.0.0.1" };
  execFileSync("pgbench", [...args, uri], { env, stdio: "ignore" });
}

async function api(token, path) {
  const response = await fetch(url + path, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, text: await response.text() };
}

/** Waits for `check` to hold; a check that throws counts as not yet (its last error is shown). */
async function until(what, check, seconds = 60) {
  let last;
  for (let i = 0; i < seconds * 4; i++) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** Every field of the page has a label (or an aria-label). */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((el) => el.labels.length === 0 && !el.getAttribute("aria-label"))
      .map((el) => el.name));
  assert.deepEqual(unlabelled, [], `unlabelled fields on ${page.url()}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

/** A browser context signed in with `token` (by keyboard: type the token, press Enter). */
async function signedIn(token, name, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: url });
  const page = await context.newPage();
  await page.goto(url + "/");
  assert.match(page.url(), /\/ui\/sign-in\?next=/, "signed out, every page leads to sign-in");
  if (name === "kate") await page.screenshot({ path: `${shots}/sign-in.png` });
  await page.getByLabel("API token").fill(token);
  await page.getByLabel("API token").press("Enter");
  await page.waitForURL(/\/ui\/databases$/).catch(async (e) => {
    console.error(page.url(), await page.content());
    throw e;
  });
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "devdb_session");
  assert.ok(session?.httpOnly && session.sameSite === "Strict", `an HttpOnly, SameSite=Strict session: ${JSON.stringify(session)}`);
  return { context, page };
}

try {
  step("kate signs in and finds her project restored");
  const { page } = await signedIn(kate, "kate");
  await page.goto(url + "/ui/projects");
  await until("the project to be ready", async () => {
    await page.reload();
    return (await page.locator("tr", { hasText: "shop" }).locator(".badge").textContent()) === "ready";
  });
  await page.screenshot({ path: `${shots}/projects.png` });
  await assertLabelled(page);

  step("she opens its masking: the scan's two columns, suggested rules; a rule that does not parse comes back as typed");
  await page.locator("tr", { hasText: "shop" }).getByRole("link", { name: "Masking" }).click();
  await page.waitForURL(/\/ui\/projects\/shop\/masking$/);
  const found = page.locator("section", { hasText: "Personal data found" }).locator("tbody tr");
  assert.deepEqual(await found.locator("td:nth-child(2)").allTextContents(), ["email", "name"]);
  await page.getByRole("button", { name: "Add suggested rules" }).click();
  const suggested = JSON.parse(await page.getByLabel("Rules, as JSON").inputValue());
  assert.deepEqual(suggested.map((r) => [r.column, r.strategy]), [["email", "email"], ["name", "name"]]);
  assert.deepEqual(JSON.parse((await api(admin, "/v1/projects/shop/masking")).text).rules, [], "suggesting saves nothing");
  const typed = JSON.stringify(suggested).slice(0, -1);
  await page.getByLabel("Rules, as JSON").fill(typed);
  await page.getByRole("button", { name: "Save and restore masked" }).click();
  await page.getByRole("alert").filter({ hasText: "not a JSON list of rules" }).waitFor();
  assert.equal(await page.getByLabel("Rules, as JSON").inputValue(), typed, "what she typed is kept");
  assert.deepEqual(JSON.parse((await api(admin, "/v1/projects/shop/masking")).text).rules, [], "nothing saved");
  await assertLabelled(page);
  await page.screenshot({ path: `${shots}/masking.png`, fullPage: true });
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.waitForURL(/\/ui\/projects$/);

  step("kate creates a database from it and waits for it to run");
  await page.getByRole("link", { name: "New database" }).click();
  await page.getByRole("textbox", { name: "Name", exact: true }).fill("kate-pg");
  await page.locator("#create").getByLabel("Project").selectOption("shop");
  await page.getByRole("button", { name: "Create" }).click();
  await page.waitForURL(/\/ui\/databases\/kate-pg$/);
  await page.locator(".summary .badge.running").waitFor({ timeout: 120_000 });

  step("she copies its psql command and runs it");
  await page.getByRole("button", { name: "Copy psql" }).click();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(psql(copied, "-c", "SELECT count(*) FROM customers"), "3", "the restored rows, through the proxy");
  assert.ok(!(await page.locator(".copyable code").first().textContent()).includes(copied.split(":")[2].split("@")[0]),
    "the password is not shown until asked for");
  await page.getByText("Show password").click();
  assert.equal(await page.locator("#password").textContent(), copied.split(":")[2].split("@")[0]);

  step("she changes work_mem and sees it with SHOW");
  await page.getByRole("combobox", { name: /^Parameter/ }).selectOption("work_mem");
  await page.getByRole("textbox", { name: "Value", exact: true }).fill("48MB");
  await page.getByRole("button", { name: "Set" }).click();
  await page.waitForURL(/\/ui\/databases\/kate-pg$/);
  await until("work_mem to apply", () => psql(copied, "-c", "SHOW work_mem") === "48MB");
  assert.match(await page.locator("table.settings").textContent(), /work_mem\s*48MB/);

  step("pgbench runs, and the charts fill with its samples");
  const uri = copied.match(/"(.+)"/)[1];
  pgbench(uri, "-i", "-s", "1", "-q");
  pgbench(uri, "-c", "2", "-T", "4");
  await until("samples of the run", async () => {
    const metrics = JSON.parse((await api(kate, "/v1/databases/kate-pg/metrics")).text);
    return metrics.points.filter((p) => (p.commits ?? 0) > 10).length >= 2;
  });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await page.reload();
  const transactions = page.locator("figure.chart", { hasText: "Transactions" });
  const line = await transactions.locator("polyline.s1").first().getAttribute("points");
  assert.ok(line.split(" ").length >= 5, `the commits line has the samples: ${line}`);
  const peak = Math.max(...JSON.parse((await api(kate, "/v1/databases/kate-pg/metrics")).text).points.map((p) => p.commits ?? 0));
  assert.ok(peak > 10, `pgbench's commits were sampled (${peak}/s)`);
  const size = await page.locator("figure.chart", { hasText: "Size" }).locator("strong").textContent();
  assert.match(size, /MiB/, "pgbench's tables grew the database");
  await page.screenshot({ path: `${shots}/database.png`, fullPage: true });
  await assertLabelled(page);
  await page.getByRole("link", { name: "last day" }).click();
  await page.waitForURL(/range=day/);
  assert.equal(await page.locator("figure.chart").count(), 6);

  step("she resets it (confirmed): pgbench's tables are gone, the setting stays");
  await page.getByRole("link", { name: "Reset" }).click();
  await page.screenshot({ path: `${shots}/confirm-reset.png` });
  await page.getByRole("button", { name: "Reset kate-pg" }).click();
  await page.waitForURL(/\/ui\/databases\/kate-pg$/);
  await until("the reset", () => psql(copied, "-c", "SELECT to_regclass('pgbench_accounts') IS NULL") === "t", 120);
  assert.equal(psql(copied, "-c", "SHOW work_mem"), "48MB");

  step("bob sees none of kate's databases, on any page");
  const asBob = await signedIn(bob, "bob");
  assert.equal(await asBob.page.getByText("kate-pg").count(), 0);
  const direct = await asBob.page.goto(url + "/ui/databases/kate-pg");
  assert.equal(direct.status(), 404);
  for (const path of ["/ui/databases?owner=kate", "/ui/databases?project=shop", "/ui/reports/usage?owner=kate", "/ui/reports/usage"]) {
    await asBob.page.goto(url + path);
    assert.equal(await asBob.page.getByText("kate-pg").count(), 0, path);
    assert.equal(await asBob.page.locator("section.owner", { hasText: "kate" }).count(), 0, path);
  }
  step("bob clones the shared project for himself");
  await asBob.page.goto(url + "/ui/databases");
  await assertLabelled(asBob.page);
  await asBob.page.getByRole("textbox", { name: "Name", exact: true }).fill("bob-pg");
  await asBob.page.getByRole("button", { name: "Create" }).click();
  await asBob.page.waitForURL(/\/ui\/databases\/bob-pg$/);
  await asBob.page.locator(".summary .badge.running").waitFor({ timeout: 120_000 });
  const forged = await asBob.context.request.post(url + "/ui/databases/kate-pg/action", { form: { action: "delete", csrf: "guess" } });
  assert.equal(forged.status(), 403, "a forged form");
  await asBob.page.setViewportSize({ width: 390, height: 844 });
  await asBob.page.goto(url + "/ui/databases");
  await asBob.page.screenshot({ path: `${shots}/databases-phone.png`, fullPage: true });
  await asBob.context.close();

  step("kate's list and the admin's report; the CSV is the API's");
  await page.goto(url + "/ui/databases");
  await page.screenshot({ path: `${shots}/databases.png` });
  const asAdmin = await signedIn(admin, "admin");
  await asAdmin.page.goto(url + "/ui/reports/usage");
  await until("a sample of bob's database in the report", async () => {
    await asAdmin.page.reload();
    return (await asAdmin.page.locator("section.owner").count()) === 2;
  });
  for (const owner of ["kate", "bob"]) {
    const row = asAdmin.page.locator("section.owner", { has: asAdmin.page.getByRole("heading", { name: owner }) }).locator("tbody tr");
    assert.match(await row.textContent(), /shop\s*1\s*0/, `${owner}: one database created, none deleted`);
  }
  await assertLabelled(asAdmin.page);
  await asAdmin.page.screenshot({ path: `${shots}/usage.png`, fullPage: true });
  // Printed: no navigation or forms, one page per owner.
  await asAdmin.page.emulateMedia({ media: "print" });
  const printed = await asAdmin.page.evaluate(() => ({
    breaks: [...document.querySelectorAll("section.owner")].map((s) => getComputedStyle(s).breakAfter),
    header: getComputedStyle(document.querySelector("header.top")).display,
    form: getComputedStyle(document.querySelector("form.filters")).display,
  }));
  assert.deepEqual(printed, { breaks: ["page", "page"], header: "none", form: "none" });
  await asAdmin.page.emulateMedia({ media: "screen" });
  const download = asAdmin.page.waitForEvent("download");
  await asAdmin.page.getByRole("link", { name: "Download CSV" }).click();
  const file = await (await download).path();
  const { readFileSync } = await import("node:fs");
  const viaApi = await api(admin, "/v1/reports/usage?format=csv");
  assert.equal(readFileSync(file, "utf8"), viaApi.text, "the page's CSV is the API's");
  assert.match(viaApi.text, /^owner,project,databases_created/);
  await asAdmin.context.close();

  step("kate deletes it (confirmed)");
  await page.goto(url + "/ui/databases/kate-pg");
  await page.getByRole("link", { name: "Delete" }).click();
  await page.getByRole("button", { name: "Delete kate-pg" }).click();
  await page.waitForURL(/\/ui\/databases$/);
  await until("the database to go", async () => (await api(admin, "/v1/databases/kate-pg")).status === 404);
  step("ok");
} finally {
  await browser.close();
}
