// Size of herald-client as a browser downloads it: minified with esbuild (a devDependency)
// and gzipped (level 9). Other files given as arguments (other libraries' browser builds) are
// measured the same way, each re-minified by the same esbuild, for a like-for-like table.
//   node scripts/size.mjs [other.js ...]
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { transformSync } from "esbuild";

const files = [new URL("../src/herald-client.js", import.meta.url).pathname, ...process.argv.slice(2)];
console.log("file\tbytes\tminified\tminified+gzip");
for (const file of files) {
  const src = readFileSync(file, "utf8");
  const min = transformSync(src, { minify: true, format: file.endsWith(".mjs") || file.includes("herald-client") ? "esm" : undefined }).code;
  const gz = gzipSync(min, { level: 9 }).length;
  console.log(`${file}\t${Buffer.byteLength(src)}\t${Buffer.byteLength(min)}\t${gz}`);
}
