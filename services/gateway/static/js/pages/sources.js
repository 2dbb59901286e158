import { api } from "../api.js";
import { announce, appendAll, field, h, heading, parseObject, select } from "../dom.js";
import { dateTime } from "../format.js";
import { t } from "../i18n.js";
import { href, navigate } from "../router.js";
import { session } from "../session.js";
import { busy, DRIVER_TEMPLATES, sortableTable, tenantField } from "../widgets.js";

async function createForm() {
  const drivers = Object.keys(DRIVER_TEMPLATES);
  const driver = select("driver", drivers.map((d) => [d, t(`driver.${d}`)]), "filesystem");
  const config = h("textarea", { name: "config", rows: "6", spellcheck: false, id: "source-config" });
  const configError = h("p", { class: "error", id: "source-config-error" });
  const template = () => {
    config.value = JSON.stringify(DRIVER_TEMPLATES[driver.value], null, 2);
  };
  template();
  driver.addEventListener("change", template);
  const submit = h("button", { type: "submit", class: "btn primary", id: "create-source-submit" }, t("common.create"));
  const form = h(
    "form",
    { class: "card", id: "create-source", "aria-labelledby": "create-source-title" },
    h("h2", { id: "create-source-title" }, t("sources.create")),
    field(t("common.name"), h("input", { type: "text", name: "name", required: true, id: "source-name" })),
    await tenantField("tenant", "", { any: false }),
    field(t("common.driver"), driver),
    field(t("common.config"), config),
    configError,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const parsed = parseObject(config.value);
    configError.textContent = parsed.error || "";
    config.setAttribute("aria-invalid", String(Boolean(parsed.error)));
    if (parsed.error) {
      config.setAttribute("aria-describedby", configError.id);
      config.focus();
      return;
    }
    busy(submit, async () => {
      const body = { name: form.elements.name.value.trim(), driver: driver.value, config: parsed.value };
      if (form.elements.tenant) body.tenant = form.elements.tenant.value;
      const source = await api.post("/api/v1/sources", body);
      announce(t("sources.created", { name: source.name }));
      navigate(`/sources/${source.id}`);
    });
  });
  return form;
}

export async function render(ctx) {
  const { main } = ctx;
  const { items } = await api.get("/api/v1/sources");
  const columns = [
    {
      label: t("common.name"),
      key: (s) => s.name,
      cell: (s) => h("a", { href: href(`/sources/${encodeURIComponent(s.id)}`) }, s.name),
    },
    { label: t("common.tenant"), key: (s) => s.tenant, cell: (s) => s.tenant },
    { label: t("common.driver"), key: (s) => s.driver, cell: (s) => s.driver },
    { label: t("common.created"), key: (s) => s.created_at, cell: (s) => dateTime(s.created_at) },
  ];
  appendAll(main, 
    heading(t("sources.title")),
    session.can("write") ? await createForm() : null,
    sortableTable(t("sources.caption"), columns, items),
  );
}
