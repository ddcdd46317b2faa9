// choiros frontend: a single-page app. Shows the backend version and the notes, adds notes,
// and keeps a websocket open to the backend. Only same-origin URLs: Caddy routes /api/*,
// /ws and the health path to the backend, everything else to these files.
"use strict";

const API_VERSION_URL = "/api/version";
const API_NOTES_URL = "/api/notes";
const LIVE_PATH = "/ws";

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

async function getJSON(url, options) {
  const response = await fetch(url, Object.assign({ headers: { Accept: "application/json" } }, options));
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return body;
}

async function loadVersion() {
  try {
    const body = await getJSON(API_VERSION_URL);
    setText("api-version", body.version);
  } catch (err) {
    setText("api-version", "unavailable (" + err.message + ")");
  }
}

function renderNotes(notes) {
  const list = document.getElementById("notes");
  list.replaceChildren();
  for (const note of notes) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.dateTime = note.created_at;
    time.textContent = note.created_at;
    item.append(time, " ", note.text);
    list.append(item);
  }
  setText("notes-status", notes.length === 0 ? "No notes yet." : "");
}

async function loadNotes() {
  try {
    renderNotes(await getJSON(API_NOTES_URL));
  } catch (err) {
    setText("notes-status", "Could not load notes: " + err.message);
  }
}

async function addNote(event) {
  event.preventDefault();
  const input = document.getElementById("note-text");
  const text = input.value.trim();
  if (!text) return;
  try {
    await getJSON(API_NOTES_URL, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ text: text }),
    });
    input.value = "";
    await loadNotes();
  } catch (err) {
    setText("notes-status", "Could not add note: " + err.message);
  }
}

// The client-side router: the server answers every page path with this same index.html
// (frontend.spa), and the path decides which section shows.
function showPage(path) {
  const sections = Array.from(document.querySelectorAll("[data-page]"));
  const shown = sections.some((s) => s.dataset.page === path) ? path : "/";
  for (const section of sections) {
    section.hidden = section.dataset.page !== shown;
  }
}

function navigate(event) {
  const link = event.target.closest("a[data-route]");
  if (!link) return;
  event.preventDefault();
  history.pushState(null, "", link.getAttribute("href"));
  showPage(location.pathname);
}

// A deploy closes open websockets (a Caddy reload closes every proxied one, a restarted
// backend closes its own): reconnect, waiting a little longer after each failure.
function connectLive(delay) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(scheme + "//" + location.host + LIVE_PATH);
  socket.onopen = () => {
    delay = 250;
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    setText("live", "connected to release " + message.version);
  };
  socket.onclose = () => {
    setText("live", "reconnecting…");
    const next = Math.min(delay * 2, 10000);
    setTimeout(() => connectLive(next), delay + Math.random() * delay);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("note-form").addEventListener("submit", addNote);
  document.addEventListener("click", navigate);
  window.addEventListener("popstate", () => showPage(location.pathname));
  showPage(location.pathname);
  loadVersion();
  loadNotes();
  connectLive(250);
});
