/*
 * The feedback_plugin demo chat page. Plain JavaScript, no build step.
 *
 * Rule of the house: every text that comes from the user or the model is put in the
 * page with textContent (through el() below), never as HTML.
 */
(() => {
  "use strict";

  const API = "/api";
  const SESSION_KEY = "feedback_plugin.demo.session";
  const API_KEY_KEY = "feedback_plugin.demo.apiKey";

  const state = {
    sessionId: null,
    apiKey: null,
    info: null,
    // qa_id -> {qa_id, question, answer, responder, context: [{id, title, text}], memories: [...],
    //          feedback_score, feedback_text}: what POST /api/chat/stream (its answer event)
    //          or GET /api/chat/history said
    turns: new Map(),
    selected: null,
    busy: false,
  };

  // -- helpers -------------------------------------------------------------------------

  const $ = (selector) => document.querySelector(selector);

  /** A DOM element; `text` goes in as textContent, children are nodes or plain strings. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child != null) node.append(child); // strings become text nodes
    return node;
  }

  function newSessionId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function loadSession() {
    let id = null;
    try {
      id = localStorage.getItem(SESSION_KEY);
      state.apiKey = localStorage.getItem(API_KEY_KEY);
    } catch (_) {
      /* storage disabled: a session per page load */
    }
    if (!id) {
      id = newSessionId();
      saveSession(id);
    }
    state.sessionId = id;
  }

  function saveSession(id) {
    try {
      localStorage.setItem(SESSION_KEY, id);
    } catch (_) {
      /* ignore */
    }
  }

  async function request(path, options, accept) {
    const headers = { Accept: accept };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
    return fetch(API + path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
  }

  async function failure(response) {
    let detail = "";
    try {
      const body = await response.json();
      detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    } catch (_) {
      /* not JSON */
    }
    return new Error(`HTTP ${response.status}${detail ? `: ${detail}` : ""}`);
  }

  async function api(path, options = {}, retried = false) {
    const response = await request(path, options, "application/json");
    if (response.status === 401 && !retried && askForKey()) return api(path, options, true);
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  /**
   * POST `body` to a streaming endpoint and call `onEvent` with each event of its NDJSON
   * answer (one JSON object a line) as it arrives.
   */
  async function stream(path, body, onEvent, retried = false) {
    const response = await request(path, { method: "POST", body }, "application/x-ndjson");
    if (response.status === 401 && !retried && askForKey()) return stream(path, body, onEvent, true);
    if (!response.ok) throw await failure(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    const emit = (line) => {
      if (line.trim()) onEvent(JSON.parse(line));
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n")) >= 0) {
        emit(buffered.slice(0, end));
        buffered = buffered.slice(end + 1);
      }
    }
    emit(buffered + decoder.decode());
  }

  function askForKey() {
    const key = window.prompt("This server wants an API key (FEEDBACK_PLUGIN_API_KEYS):");
    if (!key) return false;
    state.apiKey = key.trim();
    try {
      localStorage.setItem(API_KEY_KEY, state.apiKey);
    } catch (_) {
      /* ignore */
    }
    for (const buttons of document.querySelectorAll("feedback-buttons")) buttons.apiKey = state.apiKey;
    return true;
  }

  function ratingLabel(turn) {
    const s = turn.feedback_score;
    // the thresholds are the server's (GET /api/info → ratings, from feedback_plugin/ratings.py)
    const ratings = state.info && state.info.ratings;
    if (s == null) return { icon: "–", text: turn.feedback_text ? "comment only" : "not rated", cls: "none" };
    if (ratings && s >= ratings.positive_min_score) return { icon: "👍", text: `liked (score ${s})`, cls: "up" };
    if (ratings && s <= ratings.negative_max_score) return { icon: "👎", text: `disliked (score ${s})`, cls: "down" };
    return { icon: "·", text: `score ${s}`, cls: "mid" };
  }

  // -- the chat column ---------------------------------------------------------------

  function scrollToEnd() {
    const box = $("#messages");
    box.scrollTop = box.scrollHeight;
  }

  function showEmpty() {
    const box = $("#messages");
    box.replaceChildren();
    const chips = el("div", { class: "chips" });
    for (const q of (state.info && state.info.suggestions) || []) {
      const chip = el("button", { type: "button", class: "chip", text: q });
      chip.addEventListener("click", () => ask(q));
      chips.append(chip);
    }
    box.append(
      el("div", { class: "empty", id: "empty" },
        el("h2", { text: "Ask the Acme Notes help centre" }),
        el("p", { text: "Rate each answer with 👍 or 👎 (add a comment if you like). Answers you like come back as memories when you ask something similar — in this session or the next." }),
        chips),
    );
  }

  function addUserMessage(text) {
    $("#empty")?.remove();
    const msg = el("div", { class: "msg user" }, el("div", { class: "bubble", text }));
    $("#messages").append(msg);
    return msg;
  }

  function addPending() {
    const msg = el("div", { class: "msg bot pending", "aria-busy": "true" },
      el("div", { class: "bubble" }, dots()));
    $("#messages").append(msg);
    return msg;
  }

  /** The line under an answer: who answered, its sources, the memories it used. */
  function fillMeta(meta, turn) {
    const responder = turn.responder || (turn.metadata && turn.metadata.responder) || null;
    const offline = turn.offline != null ? turn.offline : responder === "offline responder";
    meta.replaceChildren();
    if (responder) {
      meta.append(el("span", { class: `badge ${offline ? "offline" : "model"}`, text: responder }));
    }
    if (turn.context && turn.context.length) {
      meta.append(el("span", { class: "sources", text: `Sources: ${turn.context.map((d) => d.title).join(", ")}` }));
    }
    if (turn.memories && turn.memories.length) {
      const n = turn.memories.length;
      // the offline responder gives a liked answer found by meaning after "From an answer you liked: "
      const reused = turn.memories.find((m) => m.answer && turn.answer && turn.answer.endsWith(m.answer));
      const byMeaning = reused ? reused.found_by === "meaning" : turn.memories.some((m) => m.found_by === "meaning");
      let text = reused ? "reuses an answer you liked" : `${n} ${n === 1 ? "memory" : "memories"} used`;
      if (byMeaning) text += " · found by meaning";
      meta.append(el("span", { class: "sources memory-note", "data-by-meaning": byMeaning, text }));
    }
  }

  /** How memory found a liked turn (its `found_by` and `similarity`), or null when not said. */
  function foundBy(memory) {
    const how = { words: "found by words", meaning: "found by meaning", "words+meaning": "found by words and meaning" }[memory.found_by];
    if (!how) return null;
    return memory.similarity == null ? how : `${how} · similarity ${memory.similarity.toFixed(2)}`;
  }

  /**
   * An answer's message with its <feedback-buttons>. While `turn.streaming` the answer is
   * still being written: the buttons are there but inert until the turn is stored.
   */
  function botMessage(turn) {
    const meta = el("div", { class: "meta" });
    fillMeta(meta, turn);
    const answer = el("p", { class: "answer", text: turn.answer });
    if (turn.streaming && !turn.answer) answer.append(dots());
    const bubble = el("div", { class: "bubble" }, answer, meta);
    const msg = el("div", {
      class: `msg bot${turn.streaming ? " streaming" : ""}`,
      id: `turn-${cssId(turn.qa_id)}`,
      "data-qa-id": turn.qa_id,
      "aria-busy": turn.streaming ? "true" : null,
    }, bubble);
    if (turn.recorded === false) {
      msg.append(notRecorded());
    } else {
      const buttons = el("feedback-buttons", {
        "qa-id": turn.qa_id,
        "session-id": state.sessionId,
        "api-base": API,
        score: turn.feedback_score,
        comment: turn.feedback_text,
        inert: turn.streaming ? true : null,
      });
      if (state.apiKey) buttons.apiKey = state.apiKey;
      msg.append(buttons);
    }
    msg.addEventListener("click", (event) => {
      if (event.target === msg || event.target.closest(".bubble")) select(turn.qa_id, false);
    });
    return msg;
  }

  function dots() {
    return el("span", { class: "dots", "aria-label": "Thinking" }, el("i"), el("i"), el("i"));
  }

  function notRecorded() {
    return el("p", { class: "warn", text: "This answer could not be recorded, so it cannot be rated." });
  }

  /** Show `turn` (its answer event has arrived) in its streaming message `msg`. */
  function finishMessage(msg, turn) {
    turn.streaming = false;
    msg.querySelector(".answer").textContent = turn.answer;
    fillMeta(msg.querySelector(".meta"), turn);
    msg.classList.remove("streaming");
    msg.removeAttribute("aria-busy");
    const buttons = msg.querySelector("feedback-buttons");
    if (turn.recorded === false) {
      if (buttons) buttons.replaceWith(notRecorded());
    } else if (buttons) {
      buttons.removeAttribute("inert");
    }
  }

  function cssId(qaId) {
    return qaId.replace(/[^A-Za-z0-9_-]/g, "_");
  }

  function setBusy(busy) {
    state.busy = busy;
    $("#question").disabled = busy;
    $("#send").disabled = busy;
    for (const chip of document.querySelectorAll(".chip")) chip.disabled = busy;
  }

  async function ask(question) {
    question = question.trim();
    if (!question || state.busy) return;
    setBusy(true);
    addUserMessage(question);
    const pending = addPending();
    scrollToEnd();
    let turn = null;
    let msg = null;
    let answered = false;
    const info = state.info || {};
    try {
      // the turn's qa_id arrives first: the answer gets its buttons before its first word
      await stream("/chat/stream", { session_id: state.sessionId, question }, (event) => {
        if (event.type === "qa_id" && !turn) {
          turn = {
            qa_id: event.qa_id,
            question,
            answer: "",
            responder: info.responder || null,
            offline: info.offline,
            context: [],
            memories: [],
            feedback_score: null,
            feedback_text: null,
            streaming: true,
          };
          state.turns.set(turn.qa_id, turn);
          msg = botMessage(turn);
          pending.replaceWith(msg);
          select(turn.qa_id, false);
        } else if (turn && (event.type === "token" || event.type === "reset")) {
          turn.answer = event.type === "token" ? turn.answer + event.text : "";
          msg.querySelector(".answer").textContent = turn.answer;
          scrollToEnd();
        } else if (turn && event.type === "answer" && event.qa_id === turn.qa_id) {
          Object.assign(turn, {
            answer: event.answer,
            responder: event.responder,
            offline: event.offline,
            recorded: event.recorded,
            context: event.context,
            memories: event.memories,
          });
          finishMessage(msg, turn);
          select(turn.qa_id, false);
          answered = true;
          if (turn.recorded !== false && $("#session-rating").hidden) showSessionRating(null);
        } else if (event.type === "error") {
          throw new Error(event.detail);
        }
      });
      if (!answered) throw new Error("the answer was cut off");
      $("#question").value = "";
    } catch (error) {
      if (turn) state.turns.delete(turn.qa_id); // not recorded: nothing to rate
      if (state.selected === (turn && turn.qa_id)) state.selected = null;
      (msg || pending).replaceWith(
        el("div", { class: "msg bot error" }, el("div", { class: "bubble", text: `Something went wrong: ${error.message}` })),
      );
      renderTurns();
      renderMemories();
    } finally {
      setBusy(false);
      scrollToEnd();
      $("#question").focus();
    }
  }

  // -- the side panel ------------------------------------------------------------------

  /**
   * The "rate this conversation" control: a <feedback-buttons target="session"> for the
   * current session, shown once the session has a turn (a session without turns cannot be
   * rated). `rating` is GET /api/sessions/feedback's answer, or null for "not rated".
   */
  function showSessionRating(rating) {
    const box = $("#session-rating");
    const buttons = $("#session-buttons");
    if (state.apiKey) buttons.apiKey = state.apiKey;
    buttons.setAttribute("session-id", state.sessionId);
    if (rating && rating.feedback_score != null) buttons.setAttribute("score", rating.feedback_score);
    else buttons.removeAttribute("score");
    if (rating && rating.feedback_text) buttons.setAttribute("comment", rating.feedback_text);
    else buttons.removeAttribute("comment");
    box.hidden = false;
  }

  function hideSessionRating() {
    $("#session-rating").hidden = true;
    $("#session-buttons").removeAttribute("score");
    $("#session-buttons").removeAttribute("comment");
  }

  async function loadSessionRating() {
    if (!state.turns.size) {
      hideSessionRating();
      return;
    }
    try {
      showSessionRating(await api(`/sessions/feedback?session_id=${encodeURIComponent(state.sessionId)}`));
    } catch (_) {
      hideSessionRating(); // not there (yet): the control comes with the next answer
    }
  }

  function renderTurns() {
    const list = $("#turns");
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(".turn");
    const refocus = focused ? focused.dataset.qaId : null;
    list.replaceChildren();
    const turns = [...state.turns.values()];
    let up = 0;
    let down = 0;
    turns.forEach((turn, i) => {
      const rating = ratingLabel(turn);
      if (rating.cls === "up") up += 1;
      if (rating.cls === "down") down += 1;
      const item = el("button", {
        type: "button",
        class: "turn",
        "data-qa-id": turn.qa_id,
        "aria-current": turn.qa_id === state.selected ? "true" : null,
        title: "Show this answer and the memories it used",
      },
        el("span", { class: "n", text: `${i + 1}` }),
        el("span", { class: `rating ${rating.cls}`, title: rating.text, "aria-label": rating.text, text: rating.icon }),
        el("span", { class: "q", text: turn.question }),
      );
      if (turn.feedback_text) item.append(el("span", { class: "c", title: turn.feedback_text, text: "💬" }));
      item.addEventListener("click", () => select(turn.qa_id, true));
      list.append(el("li", {}, item));
      if (turn.qa_id === refocus) item.focus();
    });
    $("#turns-summary").textContent = turns.length
      ? `${turns.length} ${turns.length === 1 ? "turn" : "turns"} · ${up} 👍 · ${down} 👎`
      : "No turns yet.";
  }

  function renderMemories() {
    const list = $("#memories");
    const hint = $("#memories-for");
    list.replaceChildren();
    const turn = state.selected ? state.turns.get(state.selected) : null;
    if (!turn) {
      hint.textContent = "Ask a question to see which liked answers it used.";
      return;
    }
    hint.replaceChildren("For “", el("span", { class: "q", text: turn.question }), "”");
    if (!turn.memories) {
      list.append(el("li", { class: "none", text: "Memories are shown for answers given since this page was opened." }));
      return;
    }
    if (!turn.memories.length) {
      list.append(el("li", { class: "none", text: "None matched. Rate an answer 👍, then ask something similar." }));
      return;
    }
    for (const memory of turn.memories) {
      const rating = ratingLabel(memory);
      list.append(
        el("li", { class: "memory" },
          el("div", { class: "mq" }, el("span", { class: `rating ${rating.cls}`, title: rating.text, text: rating.icon }), el("span", { text: memory.question })),
          el("div", { class: "ma", text: memory.answer }),
          el("div", { class: "mm", text: memoryOrigin(memory) }),
          foundBy(memory) && el("div", {
            class: "mf",
            "data-found-by": memory.found_by,
            title: memory.found_by === "meaning"
              ? "It shares no word the search matched: the embedding model found it by what it means."
              : null,
            text: foundBy(memory),
          }),
        ),
      );
    }
  }

  function memoryOrigin(memory) {
    if (memory.session_id == null) return "no longer in memory";
    return memory.session_id === state.sessionId ? "this session" : "an earlier session";
  }

  function select(qaId, scroll) {
    state.selected = qaId;
    for (const msg of document.querySelectorAll(".msg.bot.selected")) msg.classList.remove("selected");
    const msg = document.getElementById(`turn-${cssId(qaId)}`);
    if (msg) {
      msg.classList.add("selected");
      if (scroll) msg.scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
    renderTurns();
    renderMemories();
  }

  // -- start ---------------------------------------------------------------------------

  async function loadTurns() {
    // the history has each answer's sources and memories, as the chat's answer event gave them
    const entries = await api(`/chat/history?session_id=${encodeURIComponent(state.sessionId)}`);
    state.turns.clear();
    if (!entries.length) {
      showEmpty();
    } else {
      $("#messages").replaceChildren();
      for (const entry of entries) {
        state.turns.set(entry.qa_id, entry);
        addUserMessage(entry.question);
        $("#messages").append(botMessage(entry));
      }
    }
    state.selected = entries.length ? entries[entries.length - 1].qa_id : null;
    if (state.selected) select(state.selected, false);
    else {
      renderTurns();
      renderMemories();
    }
    await loadSessionRating();
    scrollToEnd();
  }

  function showSession() {
    $("#session-id").textContent = state.sessionId.slice(0, 8);
    $("#session-id").title = state.sessionId;
  }

  // how liked answers are found (GET /api/info → memory_search): by meaning, or by words
  function showMemorySearch(search) {
    const line = $("#memory-search");
    if (!search) {
      line.textContent = "";
      return;
    }
    line.textContent = search.label;
    line.dataset.mode = search.mode;
    line.title = search.mode === "meaning"
      ? `Liked answers are found by the words they share with the question and by their meaning (the embedding model ${search.model}${search.local ? ", running on this server: no text leaves it" : ""}).`
      : search.note || "Liked answers are found by the words they share with the question.";
  }

  async function start() {
    loadSession();
    showSession();
    try {
      state.info = await api("/info");
      const badge = $("#responder");
      badge.textContent = state.info.offline ? "offline responder" : state.info.responder;
      badge.classList.add(state.info.offline ? "offline" : "model");
      badge.title = state.info.offline
        ? state.info.note || "No chat model configured (FEEDBACK_PLUGIN_CHAT_MODEL): answers come from the bundled help-centre articles."
        : `Answers by the chat model ${state.info.responder}`;
      showMemorySearch(state.info.memory_search);
    } catch (error) {
      $("#responder").textContent = "server unreachable";
      $("#memory-search").textContent = "";
    }
    try {
      await loadTurns();
    } catch (error) {
      showEmpty();
      $("#turns-summary").textContent = `Could not load this session (${error.message}).`;
    }
    document.body.dataset.ready = "true";
  }

  document.addEventListener("feedback-change", (event) => {
    const turn = state.turns.get(event.detail.qaId);
    if (!turn) return;
    turn.feedback_score = event.detail.score;
    turn.feedback_text = event.detail.comment;
    renderTurns();
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("#ask").addEventListener("submit", (event) => {
      event.preventDefault();
      ask($("#question").value);
    });
    $("#new-session").addEventListener("click", async () => {
      if (state.busy) return;
      state.sessionId = newSessionId();
      saveSession(state.sessionId);
      showSession();
      state.turns.clear();
      state.selected = null;
      hideSessionRating();
      document.body.dataset.ready = "false";
      await loadTurns();
      document.body.dataset.ready = "true";
      $("#question").focus();
    });
    start();
  });
})();
