import { ApiError, errorText } from "../api.js";
import { announce, appendAll, field, h } from "../dom.js";
import { t } from "../i18n.js";
import { signIn } from "../session.js";

export async function render({ main, onSignedIn }) {
  const token = h("input", {
    type: "password",
    name: "token",
    required: true,
    autocomplete: "current-password",
    spellcheck: false,
  });
  const error = h("p", { class: "error", id: "signin-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn primary" }, t("signin.submit"));
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", tabindex: "-1" }, t("signin.title")),
    field(t("signin.token"), token, t("signin.tokenHelp")),
    error,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const me = await signIn(token.value.trim());
      announce(t("signin.signedIn", { name: me.name || me.role }));
      onSignedIn();
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401 ? t("signin.refused") : errorText(err);
      token.setAttribute("aria-invalid", "true");
      token.focus();
    } finally {
      submit.disabled = false;
    }
  });
  appendAll(main, form);
  token.focus();
}
