"""The rating pages (server-rendered HTML, a few lines of JavaScript, no external resources).

P.910 habits: mid-grey background, the clip shown at its own pixel size (both clips of a pair in the same
place), a grey screen before, between and after clips, the vote enabled only once every clip of the trial
has played to its end (and the clips hidden while voting), one presentation per trial, labelled 5-point
ACR scale, forced A/B choice. The ``<body>`` carries ``data-page``, ``data-trial``, ``data-position`` and,
once the vote is open, ``data-ready`` (what the scripted-rater test reads).
"""

from __future__ import annotations

import html

from nerfvc.mos.manifest import ACR_SCALE, Manifest, Stimulus, Trial

_CSS = """body{background:#808080;color:#fff;font-family:sans-serif;margin:0;padding:1.5em;text-align:center}
main{max-width:1000px;margin:0 auto}p,li{line-height:1.45}.note{color:#eee;font-size:14px}
.stage{display:inline-block;background:#808080;position:relative}
video.stim{visibility:hidden;position:absolute;top:0;left:0}
#caption{font-size:28px;font-weight:bold;height:1.4em}
form button{font-size:18px;margin:.3em;padding:.5em 1em;min-width:8em}
.anchors{display:flex;gap:2em;justify-content:center;flex-wrap:wrap}.anchors figure{margin:0}
.scale{display:inline-block;text-align:left;list-style:none;padding:0}#error{color:#ffd0d0;font-weight:bold}"""

# Plays the trial's clips in turn (grey 0.5 s before, 1 s between), then shows the vote. If autoplay is
# blocked a Play button appears; if the browser cannot decode a clip, the vote stays closed and it says so.
_PLAYER = """<script>
const vids = [...document.querySelectorAll('video.stim')], form = document.getElementById('vote');
const caption = document.getElementById('caption'), playBtn = document.getElementById('play');
const sleep = ms => new Promise(r => setTimeout(r, ms));
function start(v) {
  return v.play().catch(e => {
    if (e.name !== 'NotAllowedError') throw e;
    playBtn.hidden = false;
    return new Promise(res => { playBtn.onclick = () => { playBtn.hidden = true; res(v.play()); }; });
  });
}
async function show(v) {
  const ended = new Promise((res, rej) => {
    v.onended = res;
    v.onerror = () => rej(new Error('cannot play'));
  });
  if (v.error) throw new Error('cannot play');
  caption.textContent = v.dataset.caption || '';
  v.style.visibility = 'visible';
  await start(v);
  await ended;
  v.style.visibility = 'hidden';
  caption.textContent = '';
}
let sent = false;
form.addEventListener('submit', e => { if (sent) e.preventDefault(); sent = true; });
(async () => {
  await sleep(500);
  for (const [i, v] of vids.entries()) { if (i) await sleep(1000); await show(v); }
  document.querySelector('.stage').style.display = 'none';
  form.hidden = false;
  document.body.dataset.ready = '1';
})().catch(e => {
  document.getElementById('error').textContent = 'This clip could not be played in this browser (' +
    e.message + '). Please use a recent Chrome, Firefox, Edge or Safari and reload the page.';
  document.body.dataset.error = e.message;
});
</script>"""


def _page(title: str, body: str, data: dict[str, str | int]) -> str:
    attrs = " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in data.items())
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style><body {attrs}><main>{body}</main></html>"
    )


def _video_url(token: str, sid: str) -> str:
    return f"/r/{token}/v/{sid}.mp4"


def training(m: Manifest, token: str, total: int) -> str:
    """The first page: what raters will do, the two scales, and the best and most impaired examples."""
    best, worst = m.training
    figures = "".join(
        f"<figure><video src='{_video_url(token, s.id)}' width={m.size} height={m.size} muted loop autoplay "
        f"playsinline controls></video><figcaption>{caption}</figcaption></figure>"
        for s, caption in ((best, "the original: the best quality you will see"),
                           (worst, "a strongly impaired example"))
    )  # fmt: skip
    scale = "".join(f"<li><b>{k}</b> {v}</li>" for k, v in ACR_SCALE.items())
    minutes = max(1, round(total * (m.seconds + 4) / 60))
    body = f"""<h1>Video quality test</h1>
<p>Thank you for helping. You will judge short silent clips of a talking person (about {m.seconds:g} s
each) in {total} trials, one at a time: about {minutes} min in all. Please use a laptop or desktop screen
at a normal viewing distance, do not zoom the page, and judge the picture quality only, not the person or
what they say.</p>
<p><b>Part 1.</b> After each clip, rate its quality on this scale:</p>
<ul class=scale>{scale}</ul>
<p><b>Part 2.</b> You see two clips one after the other, <b>A</b> then <b>B</b>. Choose the one whose
quality you preferred (if they look the same, pick the one you would rather watch).</p>
<p>Each clip plays once; the buttons appear when it has ended. You can stop at any time and continue later
with the same link: the test resumes where you left it.</p>
<h2>Examples</h2><div class=anchors>{figures}</div>
<form method=post action="/r/{token}/start"><p><button type=submit id=start>Start the test</button></p></form>
<p class=note>Your votes are stored anonymously under this link's number only.</p>"""
    return _page("Video quality test", body, {"page": "training"})


def trial(m: Manifest, token: str, t: Trial, ab: tuple[str, ...], position: int, total: int) -> str:
    """An ACR page (one clip, 5 buttons) or a pair page (clips A then B, 2 buttons); ``ab``: stimulus ids
    in the order shown."""
    stims: list[Stimulus] = [m.stimuli[s] for s in ab]
    captions = [""] if t.kind == "acr" else ["A", "B"]
    videos = "".join(
        f"<video class=stim src='{_video_url(token, s.id)}' data-caption='{c}' width={m.size} "
        f"height={m.size} muted playsinline preload=auto></video>"
        for s, c in zip(stims, captions)
    )
    if t.kind == "acr":
        part, question = "Part 1", "How good was the video quality?"
        buttons = "".join(
            f"<button type=submit name=score value={k}>{k} {v}</button><br>" for k, v in ACR_SCALE.items()
        )
    else:
        part, question = "Part 2", "Which clip did you prefer?"
        buttons = "".join(f"<button type=submit name=choice value={c}>{c}</button>" for c in "AB")
    body = f"""<p class=note>{part} — trial {position + 1} of {total}</p>
<div id=caption></div><div class=stage style="width:{m.size}px;height:{m.size}px">{videos}</div>
<p><button id=play hidden>Play</button></p><p id=error></p>
<form id=vote method=post action="/r/{token}/vote" hidden><input type=hidden name=trial value="{t.id}">
<h2>{question}</h2>{buttons}</form>{_PLAYER}"""
    data: dict[str, str | int] = {"page": t.kind, "trial": t.id, "position": position}
    return _page(f"Trial {position + 1} of {total}", body, data)


def done(total: int) -> str:
    """Shown once every trial has a vote."""
    body = f"<h1>Thank you!</h1><p>All {total} trials are rated. You can close this page.</p>"
    return _page("Thank you", body, {"page": "done", "position": total})
