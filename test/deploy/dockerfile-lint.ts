// A small Dockerfile linter for the basics we can check without a Docker engine: pinned base
// images, a non-root final stage without compilers, no secrets, no model weights.

export interface Instruction {
  line: number;
  keyword: string;
  args: string;
}

export interface Stage {
  name?: string;
  /** The FROM reference, as written. */
  base: string;
  /** True when `base` names an earlier stage rather than an image. */
  fromStage: boolean;
  instructions: Instruction[];
}

/** Instructions with comments dropped and `\` continuations joined. */
export function parseInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (!pending && /^\s*(#|$)/.test(line)) return;
    if (pending && /^\s*#/.test(line)) return; // comments inside a continuation
    if (!pending) start = i + 1;
    if (/\\\s*$/.test(line)) {
      pending += `${line.replace(/\\\s*$/, '')} `;
      return;
    }
    const full = (pending + line).trim();
    pending = '';
    const m = /^(\S+)\s*(.*)$/s.exec(full);
    if (m) instructions.push({ line: start, keyword: m[1].toUpperCase(), args: m[2].trim() });
  });
  return instructions;
}

/** The instructions grouped by stage (ARGs before the first FROM belong to none). */
export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const ins of parseInstructions(text)) {
    if (ins.keyword === 'FROM') {
      const words = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const base = words[0];
      const name = words.length >= 3 && words[1].toUpperCase() === 'AS' ? words[2] : undefined;
      stages.push({ name, base, fromStage: stages.some((s) => s.name === base), instructions: [] });
    } else if (stages.length) {
      stages[stages.length - 1].instructions.push(ins);
    }
  }
  return stages;
}

const EXACT_VERSION = /^\d+\.\d+\.\d+(?:[-.][\w.-]+)?$/;
const DIGEST = /@sha256:[0-9a-f]{64}$/;
const SECRET_NAME = /(KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL)/i;
const SECRET_FILE = /\.(pem|key|p12|pfx|jks)\b|(^|\/)id_(rsa|ed25519|ecdsa)\b|(^|\/)\.env\b|(^|\/)\.npmrc\b|(^|\/)\.netrc\b/i;
const WEIGHT_FILE = /\.(safetensors|gguf|ggml|bin|pt|pth|ckpt|onnx)\b|(^|\/)models?(\/|$)/i;
const TOOLCHAIN = /\b(gcc|g\+\+|clang(\+\+)?|cmake|make|build-essential|nvcc|cuda-nvcc[\w-]*|cuda-toolkit[\w-]*|python3-dev|node-gyp)\b/;
const INSTALL = /\b(apt-get|apt|apk|yum|dnf|microdnf)\s+(-\S+\s+)*(install|add)\b/;

/** Problems found, as "line N: what" strings ([] when clean). */
export function lintDockerfile(text: string): string[] {
  const stages = parseDockerfile(text);
  const problems: string[] = [];
  if (stages.length === 0) return ['no FROM instruction'];

  for (const stage of stages) {
    if (stage.fromStage) continue;
    const ref = stage.base;
    if (ref.includes('$')) {
      problems.push(`FROM ${ref}: a variable base image cannot be checked; write the pinned reference`);
      continue;
    }
    if (DIGEST.test(ref)) continue;
    const tag = /:([^/:@]+)$/.exec(ref)?.[1];
    if (!tag) problems.push(`FROM ${ref}: no tag (means :latest); pin an exact version`);
    else if (tag === 'latest') problems.push(`FROM ${ref}: :latest is not a pinned version`);
    else if (!EXACT_VERSION.test(tag)) problems.push(`FROM ${ref}: tag "${tag}" is not an exact version (major.minor.patch)`);
  }

  {
    for (const ins of parseInstructions(text)) {
      if (ins.keyword === 'ENV' || ins.keyword === 'ARG') {
        for (const name of declaredNames(ins)) {
          if (SECRET_NAME.test(name)) problems.push(`line ${ins.line}: ${ins.keyword} ${name}: secrets must not be build args or image env`);
        }
      }
      if (ins.keyword === 'COPY' || ins.keyword === 'ADD') {
        const sources = copySources(ins);
        for (const src of sources) {
          if (SECRET_FILE.test(src)) problems.push(`line ${ins.line}: ${ins.keyword} ${src}: keys and credentials must not enter the image`);
          if (WEIGHT_FILE.test(src)) problems.push(`line ${ins.line}: ${ins.keyword} ${src}: model weights are mounted, never copied into the image`);
          if (ins.keyword === 'ADD' && /^https?:\/\//.test(src)) problems.push(`line ${ins.line}: ADD ${src}: no downloads into the image`);
        }
      }
    }
  }

  const final = stages[stages.length - 1];
  const finalBase = resolveBase(stages, stages.length - 1);
  if (/(^|[/:-])(devel|sdk|builder)([-:]|$)/.test(finalBase) ||
      (/^node(:|@|$)/.test(finalBase) && !/(slim|alpine)/.test(finalBase))) {
    problems.push(`final stage FROM ${finalBase}: a build image (compilers included); use a slim/runtime image`);
  }
  for (const ins of final.instructions) {
    if (ins.keyword === 'RUN' && INSTALL.test(ins.args) && TOOLCHAIN.test(ins.args)) {
      problems.push(`line ${ins.line}: the final stage installs a compiler/build tool (${TOOLCHAIN.exec(ins.args)![0]})`);
    }
    if (ins.keyword === 'COPY' && copySources(ins).some((s) => TOOLCHAIN.test(s.split('/').pop() ?? ''))) {
      problems.push(`line ${ins.line}: the final stage copies a build tool: ${ins.args}`);
    }
  }
  const users = final.instructions.filter((i) => i.keyword === 'USER');
  const user = users.length ? users[users.length - 1].args.split(':')[0] : undefined;
  if (user === undefined) problems.push('final stage: no USER (the image would run as root)');
  else if (user === 'root' || user === '0') problems.push(`final stage: USER ${user} runs as root`);
  return problems;
}

/** The image the stage at `index` finally builds on (following FROM <stage> chains). */
function resolveBase(stages: Stage[], index: number): string {
  let stage = stages[index];
  for (let guard = 0; stage.fromStage && guard < stages.length; guard++) {
    stage = stages.find((s) => s.name === stage.base)!;
  }
  return stage.base;
}

function declaredNames(ins: Instruction): string[] {
  // ENV A=1 B=2 | ENV A 1 | ARG A | ARG A=1
  if (ins.keyword === 'ENV' && !ins.args.includes('=')) return [ins.args.split(/\s+/)[0]];
  return [...ins.args.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)/g)].map((m) => m[1])
    .filter((name, i, all) => ins.keyword === 'ARG' || all.indexOf(name) === i);
}

function copySources(ins: Instruction): string[] {
  const args = ins.args.trim();
  let words: string[];
  if (args.startsWith('[')) {
    try {
      words = JSON.parse(args) as string[];
    } catch {
      words = args.split(/\s+/);
    }
  } else {
    words = args.split(/\s+/);
  }
  words = words.filter((w) => !w.startsWith('--'));
  return words.slice(0, -1); // the last word is the destination
}
