// Exchange an API token for a session cookie, then go where the user was headed.
const form = document.getElementById('login-form');
const error = document.getElementById('login-error');

function target() {
  const next = new URLSearchParams(location.search).get('next') || '/ui/';
  // Only our own pages: never an open redirect.
  return /^\/(ui\/|docs)/.test(next) && !next.startsWith('//') ? next : '/ui/';
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.textContent = '';
  const token = document.getElementById('token').value.trim();
  const response = await fetch('/api/v1/session', {
    method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json', 'Accept': 'application/json'},
    body: JSON.stringify({token}),
  });
  if (response.ok) {
    location.assign(target());
    return;
  }
  const body = await response.json().catch(() => ({}));
  error.textContent = typeof body.detail === 'string' ? body.detail : `login failed (${response.status})`;
});
