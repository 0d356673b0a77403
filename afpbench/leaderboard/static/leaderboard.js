// Sortable tables of the leaderboard page: click a header to sort by that column (again to
// reverse). A cell sorts by its data-value (numbers numerically, empty cells last). A link
// inside a header (a set's gallery) is followed instead of sorting.
(function () {
  function cellValue(td) {
    var v = td.getAttribute('data-value');
    if (v === null || v === '') { return null; }
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function headRow(table) { return table.tHead.rows[table.tHead.rows.length - 1]; }
  function sortTable(table, col, desc) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      if (x < y) { return desc ? 1 : -1; }
      if (x > y) { return desc ? -1 : 1; }
      return 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(headRow(table).cells, function (th) { th.classList.remove('sorted-asc', 'sorted-desc'); });
    headRow(table).cells[col].classList.add(desc ? 'sorted-desc' : 'sorted-asc');
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(headRow(table).cells, function (th, col) {
      th.addEventListener('click', function (ev) {
        if (ev.target.closest && ev.target.closest('a')) { return; }
        sortTable(table, col, !th.classList.contains('sorted-desc'));
      });
    });
    var initial = table.getAttribute('data-sort-col');
    if (initial !== null) { sortTable(table, Number(initial), true); }
  });
  document.body.setAttribute('data-ready', '1');
  console.log('afpbench-leaderboard-ready');
})();
