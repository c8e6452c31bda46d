/*
 * <feedback-buttons>: 👍 / 👎 and a comment box under any chat answer, talking to the
 * feedback_plugin REST API. No dependencies, no build step; see docs/web.md.
 *
 *   <script src="/static/feedback-buttons.js" defer></script>
 *   <feedback-buttons qa-id="…" session-id="…" api-base="/api"></feedback-buttons>
 *   <feedback-buttons target="session" session-id="…"></feedback-buttons>   (a whole conversation)
 *
 * Attributes
 *   qa-id       the turn's id (required for a turn; the handler's qa_id = str(root run_id))
 *   session-id  the turn's session (required); without qa-id, the element rates the session
 *   target      "turn" (default when qa-id is set) or "session": rate the whole conversation
 *   api-base    where the REST router is mounted (default "/api")
 *   score       the current score 1–5, if known (a positive score shows 👍 pressed, a
 *               negative one 👎; the thresholds come from GET {api-base}/ratings)
 *   comment     the current comment, if any
 *   api-key     sent as "Authorization: Bearer <key>" (or set the .apiKey property)
 *
 * Clicking a thumb sends PUT {api-base}/turns/{qa-id}/feedback?session_id=… (a session:
 * PUT {api-base}/sessions/feedback?session_id=…) with {"thumbs": "up"|"down"}; clicking
 * the pressed thumb again clears the rating (DELETE, then the comment is put back if there
 * was one). 💬 opens a comment box (it also opens by itself after 👎); "Send" sends
 * {"text": …}, which keeps the score.
 *
 * Events (bubbling, composed)
 *   feedback-change  detail {target, qaId, sessionId, score, thumbs, comment, entry}
 *                    (a session: target "session", qaId null, entry the session's rating)
 *   feedback-error   detail {target, qaId, sessionId, error}
 *
 * Styling: CSS custom properties --fb-accent, --fb-up, --fb-down, --fb-border, --fb-bg,
 * --fb-muted, and ::part(button), ::part(up), ::part(down), ::part(toggle),
 * ::part(status), ::part(comment-form), ::part(textarea), ::part(send), ::part(saved).
 *
 * Every text (comments, error messages) is set with textContent, never as HTML.
 */
(() => {
  "use strict";
  if (!window.customElements || window.customElements.get("feedback-buttons")) return;

  const CSS = `
    :host { display: block; margin-top: 0.45rem; font: inherit; color: inherit;
      --_accent: var(--fb-accent, #2563eb); --_up: var(--fb-up, #15803d);
      --_down: var(--fb-down, #b42318); --_border: var(--fb-border, #d0d5dd);
      --_bg: var(--fb-bg, #fff); --_muted: var(--fb-muted, #667085); }
    [hidden] { display: none !important; }
    .bar { display: flex; gap: 0.35rem; align-items: center; flex-wrap: wrap; }
    button { font: inherit; cursor: pointer; border: 1px solid var(--_border);
      background: var(--_bg); color: inherit; border-radius: 999px; line-height: 1.3;
      padding: 0.15rem 0.6rem; transition: background 0.12s, border-color 0.12s; }
    button:hover { border-color: var(--_accent); }
    button:focus-visible, textarea:focus-visible { outline: 2px solid var(--_accent);
      outline-offset: 2px; }
    .thumb { font-size: 1.05rem; min-width: 2.4rem; }
    .up[aria-pressed="true"] { background: #dcfce7; border-color: var(--_up);
      box-shadow: inset 0 0 0 1px var(--_up); }
    .down[aria-pressed="true"] { background: #fee4e2; border-color: var(--_down);
      box-shadow: inset 0 0 0 1px var(--_down); }
    .toggle { font-size: 0.85rem; color: var(--_muted); }
    .toggle[aria-expanded="true"] { border-color: var(--_accent); color: var(--_accent); }
    :host([data-busy]) .bar button { opacity: 0.6; cursor: progress; }
    .status { font-size: 0.8rem; color: var(--_muted); margin-left: 0.15rem; }
    .status.error { color: var(--_down); }
    form { display: flex; flex-direction: column; gap: 0.35rem; margin-top: 0.45rem;
      max-width: 34rem; }
    textarea { font: inherit; font-size: 0.9rem; width: 100%; box-sizing: border-box;
      min-height: 3.6em; resize: vertical; padding: 0.4rem 0.55rem; color: inherit;
      border: 1px solid var(--_border); border-radius: 0.5rem; background: var(--_bg); }
    .actions { display: flex; gap: 0.35rem; justify-content: flex-end; }
    .send { background: var(--_accent); border-color: var(--_accent); color: #fff; }
    .saved { font-size: 0.85rem; color: var(--_muted); margin-top: 0.35rem;
      white-space: pre-wrap; overflow-wrap: anywhere; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; }
  `;

  let sheet = null;
  function addStyles(root) {
    try {
      if (!sheet) {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
      }
      root.adoptedStyleSheets = [sheet];
    } catch (_) {
      const style = document.createElement("style"); // older browsers
      style.textContent = CSS;
      root.append(style);
    }
  }

  function node(tag, props, text) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) n.setAttribute(k, v);
    if (text != null) n.textContent = text;
    return n;
  }

  function parseScore(value) {
    if (value == null || value === "") return null;
    const n = Number(value);
    return Number.isInteger(n) && n >= 1 && n <= 5 ? n : null;
  }

  // What counts as positive and negative is the server's (feedback_plugin/ratings.py),
  // fetched once per api-base from GET {api-base}/ratings; until it arrives (or when it
  // cannot be had) no thumb shows as pressed.
  const ratingsByBase = new Map();
  function loadRatings(base) {
    let pending = ratingsByBase.get(base);
    if (!pending) {
      pending = fetch(`${base}/ratings`, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then((response) => (response.ok ? response.json() : null))
        .catch(() => null)
        .then((ratings) => {
          if (!ratings) ratingsByBase.delete(base); // try again with the next element
          return ratings;
        });
      ratingsByBase.set(base, pending);
    }
    return pending;
  }

  function thumbsOf(score, ratings) {
    if (score == null || !ratings) return null;
    if (score >= ratings.positive_min_score) return "up";
    if (score <= ratings.negative_max_score) return "down";
    return null;
  }

  async function errorMessage(response) {
    let detail = "";
    try {
      const body = await response.json();
      detail = body && body.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => d && d.msg).filter(Boolean).join("; ");
    } catch (_) {
      /* not JSON */
    }
    return `HTTP ${response.status}${detail ? `: ${detail}` : ""}`;
  }

  let counter = 0;

  class FeedbackButtons extends HTMLElement {
    static get observedAttributes() {
      return ["score", "comment", "target", "qa-id", "session-id"];
    }

    constructor() {
      super();
      this._score = null;
      this._comment = null;
      this._apiKey = null;
      this._busy = false;
      this._ratings = null;
      this._reflecting = false;
      this._statusTimer = 0;
      const id = `fb-${++counter}`;
      const root = this.attachShadow({ mode: "open" });
      addStyles(root);

      this._bar = node("div", { class: "bar", part: "bar", role: "group", "aria-label": "Rate this answer" });
      const bar = this._bar;
      this._up = node("button", { type: "button", class: "thumb up", part: "button up",
        "aria-pressed": "false", "aria-label": "Thumbs up", title: "Good answer" }, "👍");
      this._down = node("button", { type: "button", class: "thumb down", part: "button down",
        "aria-pressed": "false", "aria-label": "Thumbs down", title: "Bad answer" }, "👎");
      this._toggle = node("button", { type: "button", class: "toggle", part: "button toggle",
        "aria-expanded": "false", "aria-controls": `${id}-form`, title: "Add a comment" }, "💬 Comment");
      this._status = node("span", { class: "status", part: "status", role: "status", "aria-live": "polite" });
      bar.append(this._up, this._down, this._toggle, this._status);

      this._form = node("form", { id: `${id}-form`, part: "comment-form" });
      this._form.hidden = true;
      this._label = node("label", { for: `${id}-text`, class: "sr" }, "Comment on this answer");
      const label = this._label;
      this._text = node("textarea", { id: `${id}-text`, part: "textarea", rows: "2", maxlength: "4000",
        placeholder: "What was good or wrong? (optional)" });
      const actions = node("div", { class: "actions" });
      const cancel = node("button", { type: "button", class: "cancel", part: "button cancel" }, "Cancel");
      this._send = node("button", { type: "submit", class: "send", part: "button send" }, "Send");
      actions.append(cancel, this._send);
      this._form.append(label, this._text, actions);

      this._saved = node("div", { class: "saved", part: "saved" });
      this._saved.hidden = true;
      root.append(bar, this._form, this._saved);

      this._up.addEventListener("click", () => this._thumb("up"));
      this._down.addEventListener("click", () => this._thumb("down"));
      this._toggle.addEventListener("click", () => this._openComment(this._form.hidden));
      cancel.addEventListener("click", () => this._openComment(false));
      this._form.addEventListener("submit", (event) => {
        event.preventDefault();
        this._sendComment();
      });
      this._text.addEventListener("keydown", (event) => {
        if (event.key === "Escape") this._openComment(false);
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this._sendComment();
      });
    }

    connectedCallback() {
      this._score = parseScore(this.getAttribute("score"));
      this._comment = this.getAttribute("comment") || null;
      this._render();
      if (!this._ratings) {
        loadRatings(this._base()).then((ratings) => {
          this._ratings = ratings;
          this._render();
        });
      }
    }

    attributeChangedCallback(name, _old, value) {
      if (this._reflecting) return;
      if (name === "score") this._score = parseScore(value);
      if (name === "comment") this._comment = value || null;
      this._render();
    }

    /** The current score (1–5) or null. */
    get score() {
      return this._score;
    }

    /** "up", "down" or null. */
    get thumbs() {
      return thumbsOf(this._score, this._ratings);
    }

    /** The saved comment or null. */
    get comment() {
      return this._comment;
    }

    /** The API key (the api-key attribute unless set here; kept out of the DOM when set here). */
    get apiKey() {
      return this._apiKey != null ? this._apiKey : this.getAttribute("api-key");
    }

    set apiKey(value) {
      this._apiKey = value == null || value === "" ? null : String(value);
    }

    /** "session" (the element rates the whole conversation) or "turn". */
    get target() {
      const target = this.getAttribute("target");
      if (target === "session" || target === "turn") return target;
      return !this.getAttribute("qa-id") && this.getAttribute("session-id") ? "session" : "turn";
    }

    /**
     * Reload the rating: GET {api-base}/turns/{qa-id}, or for a session
     * GET {api-base}/sessions/feedback (a session without turns is a 404: an error).
     */
    async refresh() {
      const entry = await this._request("GET", "");
      this._apply(entry, false);
      return entry;
    }

    _base() {
      return (this.getAttribute("api-base") || "/api").replace(/\/+$/, "");
    }

    _url(suffix) {
      const base = this._base();
      const session = encodeURIComponent(this.getAttribute("session-id") || "");
      // a session's rating has one URL: GET reads it, PUT and DELETE change it
      if (this.target === "session") return `${base}/sessions/feedback?session_id=${session}`;
      const qa = encodeURIComponent(this.getAttribute("qa-id") || "");
      return `${base}/turns/${qa}${suffix}?session_id=${session}`;
    }

    _detail(extra) {
      const session = this.target === "session";
      return {
        target: this.target,
        qaId: session ? null : this.getAttribute("qa-id"),
        sessionId: this.getAttribute("session-id"),
        ...extra,
      };
    }

    async _request(method, suffix, body) {
      if (!this.getAttribute("session-id")) throw new Error("the session-id attribute is required");
      if (this.target === "turn" && !this.getAttribute("qa-id")) {
        throw new Error("the qa-id attribute is required to rate an answer");
      }
      const headers = { Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const key = this.apiKey;
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(this._url(suffix), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      return response.json();
    }

    async _change(steps, message) {
      if (this._busy) return;
      this._busy = true;
      this.setAttribute("data-busy", "");
      this.setAttribute("aria-busy", "true");
      this._setStatus("Saving…");
      try {
        let entry = null;
        for (const [method, body] of steps(this)) entry = await this._request(method, "/feedback", body);
        this._apply(entry, true);
        this._setStatus(message, false, 2500);
        return entry;
      } catch (error) {
        this._setStatus(`Not saved (${error.message})`, true);
        this.dispatchEvent(new CustomEvent("feedback-error", {
          bubbles: true, composed: true, detail: this._detail({ error }),
        }));
        return null;
      } finally {
        this._busy = false;
        this.removeAttribute("data-busy");
        this.removeAttribute("aria-busy");
      }
    }

    _thumb(direction) {
      if (this._busy) return;
      if (this.thumbs === direction) {
        const comment = this._comment;
        // DELETE clears score, comment and correction; put the comment back.
        return this._change(
          () => (comment ? [["DELETE"], ["PUT", { text: comment }]] : [["DELETE"]]),
          "Rating cleared",
        );
      }
      if (direction === "down" && !this._comment) this._openComment(true, false);
      return this._change(
        () => [["PUT", { thumbs: direction }]],
        direction === "up" ? "Thanks!" : "Thanks, noted.",
      );
    }

    async _sendComment() {
      const text = this._text.value.trim();
      if (!text) {
        this._setStatus("Write a comment first", true, 2500);
        this._text.focus();
        return;
      }
      const entry = await this._change(() => [["PUT", { text }]], "Comment saved");
      if (entry) {
        this._text.value = "";
        this._openComment(false);
      }
    }

    _openComment(open, focus = true) {
      this._form.hidden = !open;
      this._toggle.setAttribute("aria-expanded", String(open));
      if (open) {
        if (!this._text.value && this._comment) this._text.value = this._comment;
        if (focus) this._text.focus();
      }
    }

    _apply(entry, notify) {
      this._score = parseScore(entry.feedback_score);
      this._comment = entry.feedback_text || null;
      this._reflecting = true;
      try {
        if (this._score == null) this.removeAttribute("score");
        else this.setAttribute("score", String(this._score));
        if (this._comment == null) this.removeAttribute("comment");
        else this.setAttribute("comment", this._comment);
      } finally {
        this._reflecting = false;
      }
      this._render();
      if (!notify) return;
      this.dispatchEvent(new CustomEvent("feedback-change", {
        bubbles: true, composed: true,
        detail: this._detail({
          sessionId: entry.session_id, score: this._score, thumbs: this.thumbs,
          comment: this._comment, entry,
        }),
      }));
    }

    _setStatus(text, error = false, clearAfter = 0) {
      clearTimeout(this._statusTimer);
      this._status.textContent = text;
      this._status.classList.toggle("error", error);
      if (clearAfter) this._statusTimer = setTimeout(() => { this._status.textContent = ""; }, clearAfter);
    }

    _render() {
      const thumbs = this.thumbs;
      const noun = this.target === "session" ? "conversation" : "answer";
      this._bar.setAttribute("aria-label", `Rate this ${noun}`);
      this._label.textContent = `Comment on this ${noun}`;
      this._up.setAttribute("aria-pressed", String(thumbs === "up"));
      this._down.setAttribute("aria-pressed", String(thumbs === "down"));
      this._up.title = thumbs === "up" ? "You liked this (click to clear)" : `Good ${noun}`;
      this._down.title = thumbs === "down" ? "You disliked this (click to clear)" : `Bad ${noun}`;
      this._saved.hidden = !this._comment;
      this._saved.textContent = this._comment ? `Your comment: ${this._comment}` : "";
      this._toggle.textContent = this._comment ? "💬 Edit comment" : "💬 Comment";
    }
  }

  window.customElements.define("feedback-buttons", FeedbackButtons);
})();
