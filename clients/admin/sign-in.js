// The sign-in page: posts the key once and goes to the console; says why when refused.
const base = document.documentElement.dataset.base;
const form = document.getElementById("sign-in");
const error = document.getElementById("error");

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  error.hidden = true;
  const input = document.getElementById("key");
  let r;
  try {
    r = await fetch(`${base}/api/sign-in`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ key: input.value.trim() }),
      credentials: "same-origin",
    });
  } catch (err) {
    return show(`The server did not answer: ${err.message}`);
  }
  input.value = "";
  if (r.ok) {
    location.assign(base);
    return;
  }
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) show("Wrong API key.");
  else if (r.status === 429) show(`Too many wrong keys from this address: try again in ${r.headers.get("retry-after") || 60} s.`);
  else show(body.message || `Refused (${r.status}).`);
});

function show(text) {
  error.textContent = text;
  error.hidden = false;
}
