/**
 * Hydrates every element the server rendered for an island: `<div data-island="name"
 * data-props="{json}">`. Each island's bundle entry calls this once.
 */
import { type ComponentType, h, hydrate } from "preact";

/** Hydrates the server-rendered markup of island `name` with component `C`. */
// deno-lint-ignore no-explicit-any
export function boot(name: string, C: ComponentType<any>): void {
  // Controls that only matter without JavaScript (submit buttons of live filters) hide.
  document.documentElement.classList.add("js");
  for (const el of document.querySelectorAll<HTMLElement>(`[data-island="${name}"]`)) {
    try {
      hydrate(h(C, JSON.parse(el.dataset.props ?? "{}")), el);
    } catch (e) {
      console.error(`Cannot hydrate island "${name}":`, e);
    }
  }
}
