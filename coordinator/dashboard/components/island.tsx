/**
 * Server side of the islands: `<Island>` renders a component to HTML inside a marker element
 * carrying its props as JSON, and records that the page needs that island's script.
 */
import { type Attributes, type ComponentType, createContext, h } from "preact";
import { useContext } from "preact/hooks";

/** The islands a page used, filled while it renders (read by the layout's script tags). */
export const IslandsUsed = createContext<Set<string> | null>(null);

/** Props of {@linkcode Island}. */
export interface IslandProps<P> {
  /** The island's file name in coordinator/dashboard/islands/, without `.tsx`. */
  name: string;
  component: ComponentType<P>;
  props: P;
}

/** Renders an island: hydrated in the browser by `/static/islands/<hash>/<name>.js`. */
export function Island<P>({ name, component: C, props }: IslandProps<P>) {
  useContext(IslandsUsed)?.add(name);
  return (
    <div class="island" data-island={name} data-props={JSON.stringify(props)}>
      {h(C as ComponentType<Attributes>, props as Attributes)}
    </div>
  );
}
