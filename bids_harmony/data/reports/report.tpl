<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="generator" content="bids_harmony with NiReports" />
<title>{{ title }}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #212529; line-height: 1.45; }
nav { position: fixed; top: 0; left: 0; right: 0; background: #f8f9fa; border-bottom: 1px solid #dee2e6;
      padding: 0.5em 1.5em; z-index: 10; }
nav a { margin-right: 1.5em; color: #0d6efd; text-decoration: none; font-size: 1.05em; }
nav a:hover { text-decoration: underline; }
main { padding: 3.5em 1.5em 2em 1.5em; max-width: 1400px; }
h1 { border-bottom: 1px solid #dee2e6; padding-bottom: 0.2em; margin-top: 1.6em; }
h2 { color: #495057; margin-top: 1.2em; } h3 { margin-top: 1em; }
.bids-entity { font-family: monospace; background: #eef; padding: 0 0.2em; }
.elem-caption, .elem-desc { color: #495057; max-width: 70em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #dee2e6; padding: 0.25em 0.6em; text-align: left; }
th { background: #f1f3f5; }
.flag { color: #b02a37; font-weight: bold; } .ok { color: #146c43; }
.alert { padding: 0.6em 1em; border-radius: 4px; }
.alert-success { background: #d1e7dd; } .alert-danger { background: #f8d7da; }
.alert-warning { background: #fff3cd; }
.nav-tabs { list-style: none; padding: 0; display: flex; gap: 0.5em; }
.nav-tabs button { background: #f1f3f5; border: 1px solid #dee2e6; padding: 0.3em 0.8em; cursor: pointer; }
.nav-tabs button.active { background: #fff; font-weight: bold; }
.tab-content > .tab-pane { display: none; } .tab-content > .tab-pane.active { display: block; }
pre { white-space: pre-wrap; background: #f8f9fa; padding: 0.6em; }
.collapse { display: none; } .collapse.show { display: block; }
object, img { max-width: 100%; }
</style>
</head>
<body>
<nav>
{% for sub_report in sections %}<a href="#{{ sub_report.name }}">{{ sub_report.name }}</a>{% endfor %}
</nav>
<main>
{% for sub_report in sections %}
  {% if sub_report.reportlets %}
  <div id="{{ sub_report.name }}">
  <h1>{{ sub_report.name }}</h1>
  {% for run_report in sub_report.reportlets %}
    <div id="{{ run_report.name }}">
      {% if run_report.title %}<h2>{{ run_report.title }}</h2>{% endif %}
      {% if run_report.subtitle %}<h3>{{ run_report.subtitle }}</h3>{% endif %}
      {% if run_report.description %}<p class="elem-desc">{{ run_report.description }}</p>{% endif %}
      {% for elem in run_report.components %}
        {% if elem[0] %}
          {% if elem[1] %}<p class="elem-caption">{{ elem[1] }}</p>{% endif %}
          {{ elem[0] }}
        {% endif %}
      {% endfor %}
    </div>
  {% endfor %}
  </div>
  {% endif %}
{% endfor %}
</main>
<script>
// tabs and folded blocks without a framework: the report works offline
document.querySelectorAll('[data-bs-toggle="tab"]').forEach(function (button) {
  button.addEventListener('click', function () {
    var list = button.closest('ul');
    list.querySelectorAll('button').forEach(function (other) { other.classList.remove('active'); });
    button.classList.add('active');
    var pane = document.querySelector(button.getAttribute('data-bs-target'));
    pane.parentElement.querySelectorAll('.tab-pane').forEach(function (other) { other.classList.remove('active', 'show'); });
    pane.classList.add('active', 'show');
  });
});
document.querySelectorAll('[data-bs-toggle="collapse"]').forEach(function (button) {
  button.addEventListener('click', function () {
    document.querySelector(button.getAttribute('data-bs-target')).classList.toggle('show');
  });
});
function toggle(id) {
  var element = document.getElementById(id);
  element.style.display = element.style.display == 'block' ? 'none' : 'block';
}
</script>
</body>
</html>
