// Chat messages -> prompt text, with the model's own Jinja chat template
// (tokenizer_config.json "chat_template", or chat_template.jinja beside it),
// rendered by @huggingface/jinja as transformers' apply_chat_template does.
// Without one we use ChatML, the format the released TurboSparse models use.
import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { UserError } from './errors';

export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function tokenString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return '';
}

export class ChatTemplate {
  private readonly template: Template;

  private constructor(
    readonly source: string,
    /** Where the template came from, for messages: a file, or "ChatML (default)". */
    readonly origin: string,
    readonly bosToken: string,
    readonly eosToken: string,
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new UserError(`${origin}: the chat template does not parse (${(e as Error).message}); fix or remove it`);
    }
  }

  /** The template of a model folder (tokenizer_config.json may be null when the folder has none). */
  static fromModel(dir: string, tokenizerConfig: object | null): ChatTemplate {
    const cfg = isObject(tokenizerConfig) ? tokenizerConfig : {};
    const bos = tokenString(cfg.bos_token);
    const eos = tokenString(cfg.eos_token);
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const t = cfg.chat_template;
    if (typeof t === 'string' && t.trim() !== '') return new ChatTemplate(t, cfgFile, bos, eos);
    if (Array.isArray(t)) {
      // [{name, template}]: transformers uses the one named "default".
      const named = t.filter(isObject);
      const def = named.find((x) => x.name === 'default') ?? named[0];
      if (def && typeof def.template === 'string') return new ChatTemplate(def.template, cfgFile, bos, eos);
      throw new UserError(`${cfgFile}: chat_template is a list without a {"name": "default", "template": ...} entry`);
    }
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    if (fs.existsSync(jinjaFile)) return new ChatTemplate(fs.readFileSync(jinjaFile, 'utf8'), jinjaFile, bos, eos);
    return ChatTemplate.chatml(bos, eos);
  }

  static chatml(bosToken = '', eosToken = ''): ChatTemplate {
    return new ChatTemplate(CHATML_TEMPLATE, 'ChatML (default)', bosToken, eosToken);
  }

  /** The end-of-turn marker the model writes, when the template is ChatML-like. */
  get endOfTurn(): string | null {
    return this.source.includes('<|im_end|>') ? '<|im_end|>' : null;
  }

  /** Renders the conversation; a template that refuses it (raise_exception: roles must alternate, ...) is a UserError. */
  render(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    } catch (e) {
      throw new UserError(`messages: the chat template (${this.origin}) failed to render them: ${(e as Error).message}`);
    }
  }
}
