// The core's size budget: src/index.ts bundled and minified with esbuild, then gzipped.
// Prints the numbers; exits 1 over BUDGET (the build, and so `make test`, fails).
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const BUDGET = 8 * 1024;
const root = fileURLToPath(new URL("..", import.meta.url));

async function measure(entry) {
  const out = await build({
    entryPoints: [root + entry],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    write: false,
  });
  const code = out.outputFiles[0].contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

const core = await measure("src/index.ts");
const typing = await measure("src/typing.ts");
const proto = await measure("src/proto.ts");
console.log(
  `size: core ${core.min} B min, ${core.gzip} B min+gzip (budget ${BUDGET}); ` +
    `typing helper ${typing.gzip} B, protobuf codec ${proto.gzip} B min+gzip (each includes nothing of the core)`,
);
if (core.gzip > BUDGET) {
  console.error(`size: the core is over its budget: ${core.gzip} > ${BUDGET} bytes min+gzip`);
  process.exit(1);
}
