// Lets a child process run the TypeScript sources directly (`node -r test/helpers/ts-register.js x.ts`),
// transpiling each file on load; tests use it to run code that jest's module sandbox cannot
// (e.g. the OTLP HTTP exporters, which load `http` through a dynamic import()).
const fs = require('node:fs');
const ts = require('typescript');

require.extensions['.ts'] = function (module, filename) {
  const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      resolveJsonModule: true,
      inlineSourceMap: true,
    },
  });
  module._compile(out.outputText, filename);
};
