// choiros frontend: shows the backend version and the notes, adds notes.
// Only relative URLs: the page and the API share one origin (Caddy routes /api/* to the backend).
"use strict";

const API_VERSION_URL = "/api/version";
const API_NOTES_URL = "/api/notes";

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

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("note-form").addEventListener("submit", addNote);
  loadVersion();
  loadNotes();
});
