/**
 * Model aliases on the models page: the names tools hard-code (`gpt-4o-mini`) and the fleet's
 * models that serve them; admins add, change and remove them here.
 */
import { useState } from "preact/hooks";
import type { AliasView } from "../wire.ts";
import { api } from "../lib/api.ts";
import { useAction } from "../lib/action.ts";

/** Props of the aliases panel. */
export interface AliasesPanelProps {
  aliases: AliasView[];
  /** The fleet's model names, offered while typing the model. */
  models: string[];
}

/** The aliases, a form to add or change one, and a button to remove each. */
export default function AliasesPanel(props: AliasesPanelProps) {
  const [aliases, setAliases] = useState(props.aliases);
  const [alias, setAlias] = useState("");
  const [model, setModel] = useState("");
  const [listed, setListed] = useState(false);
  const { busy, error, setError, run } = useAction();

  const call = (method: "PUT" | "DELETE", json: unknown) =>
    run(async () => setAliases(await api<AliasView[]>("/api/admin/aliases", { method, json })));

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!alias.trim() || !model.trim()) return setError("Name both the alias and its model");
    if (await call("PUT", { alias: alias.trim(), model: model.trim(), listed })) {
      setAlias("");
      setModel("");
      setListed(false);
    }
  };

  const remove = (name: string) => {
    if (!confirm(`Remove the alias "${name}"?`)) return;
    void call("DELETE", { alias: name });
  };

  return (
    <div class="aliases-panel">
      <form class="pull-form" onSubmit={submit} aria-label="Add an alias">
        <label class="grow">
          <span class="label">Alias</span>
          <input
            name="alias"
            placeholder="gpt-4o-mini, claude-sonnet-4-5…"
            value={alias}
            required
            onInput={(e) => setAlias((e.target as HTMLInputElement).value)}
          />
        </label>
        <label class="grow">
          <span class="label">Served by</span>
          <input
            name="model"
            list="alias-models"
            placeholder="llama3.2:3b"
            value={model}
            required
            onInput={(e) => setModel((e.target as HTMLInputElement).value)}
          />
          <datalist id="alias-models">
            {props.models.map((m) => <option key={m} value={m} />)}
          </datalist>
        </label>
        <label class="check">
          <input
            type="checkbox"
            name="listed"
            checked={listed}
            onChange={(e) => setListed((e.target as HTMLInputElement).checked)}
          />
          listed in /api/tags and /v1/models
        </label>
        <button type="submit" class="primary" disabled={busy}>Save</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table class="aliases">
          <thead>
            <tr>
              <th>Alias</th>
              <th>Served by</th>
              <th>Listed</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {aliases.map((a) => (
              <tr key={a.alias} data-alias={a.alias}>
                <td class="strong">{a.alias}</td>
                <td>{a.model}</td>
                <td>{a.listed ? "yes" : "no"}</td>
                <td class="num">
                  <button
                    type="button"
                    class="x"
                    title={`Remove the alias ${a.alias}`}
                    aria-label={`Remove the alias ${a.alias}`}
                    disabled={busy}
                    onClick={() => remove(a.alias)}
                  >
                    ×
                  </button>
                </td>
              </tr>
            ))}
            {aliases.length === 0 && (
              <tr>
                <td colSpan={4} class="empty">
                  No alias yet: clients that ask for a model by another name get 404.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}
