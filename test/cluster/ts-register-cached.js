// Lets a child process run the TypeScript sources directly (`node -r test/cluster/ts-register-cached.js x.ts`);
// tests use it to run code that jest's module sandbox cannot (e.g. the OTLP HTTP exporters, which load
// `http` through a dynamic import()) and to start expert-node processes. The transpiled output is cached
// on disk: a cluster test starts many processes, and loading the compiler and transpiling every module
// costs each of them about a second of CPU. TypeScript itself is loaded only on a cache miss.
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const cacheDir = path.join(os.tmpdir(), `turbosparse-ts-cache-${process.getuid ? process.getuid() : 'u'}`);
fs.mkdirSync(cacheDir, { recursive: true });
let ts;

require.extensions['.ts'] = function (module, filename) {
  const source = fs.readFileSync(filename, 'utf8');
  const key = crypto.createHash('sha1').update(filename).update('\0').update(source).digest('hex');
  const cached = path.join(cacheDir, `${key}.js`);
  let code;
  try {
    code = fs.readFileSync(cached, 'utf8');
  } catch {
    ts ??= require('typescript');
    code = ts.transpileModule(source, {
      fileName: filename,
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
        resolveJsonModule: true,
        inlineSourceMap: true,
      },
    }).outputText;
    // Write then rename: processes starting together never read a half-written file.
    const tmp = `${cached}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, code);
    fs.renameSync(tmp, cached);
  }
  module._compile(code, filename);
};
