/* The insights page's charts: uPlot over the trend that the page carries as a JSON data block (#insights-data).
   The same numbers are in the page's tables: without this script nothing is lost but the pictures. */
"use strict";

function insightsUtc(seconds) {
  return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC");
}

function insightsChart(target, title, series, columns, axes, scales) {
  target.textContent = "";
  const width = Math.min(target.clientWidth || 720, 760);
  return new uPlot({width, height: 260, title, tzDate: insightsUtc, series: [{label: "time (UTC)"}, ...series],
                    axes: [{}, ...axes], scales}, columns, target);
}

function insightsCharts() {
  const blob = document.getElementById("insights-data");
  if (!blob || !window.uPlot) return;
  const data = JSON.parse(blob.textContent);
  if (!data.time || !data.time.length) return;
  const few = data.time.length < 40;
  const requests = document.getElementById("insights-requests");
  if (requests) {
    insightsChart(requests, `Requests and cost per ${data.granularity}`, [
      {label: "requests", stroke: "#0b5cad", width: 2, scale: "requests", points: {show: few}},
      {label: `cost (${data.currency})`, stroke: "#a4000f", width: 2, dash: [6, 4], scale: "cost", points: {show: few},
       value: (u, v) => (v == null ? "–" : v.toFixed(6))},
    ], [data.time, data.requests, data.cost], [
      {scale: "requests", label: "requests"},
      {scale: "cost", label: `cost (${data.currency})`, side: 1, grid: {show: false}, size: 80,
       values: (u, ticks) => ticks.map((v) => String(+v.toPrecision(3)))},  // token costs are fractions of a cent
    ], {requests: {auto: true}, cost: {auto: true}});
  }
  const satisfaction = document.getElementById("insights-satisfaction");
  if (satisfaction) {
    const percent = (u, v) => (v == null ? "–" : `${(v * 100).toFixed(1)}%`);
    insightsChart(satisfaction, `Satisfaction per ${data.granularity}`, [
      {label: "thumbs-up rate", stroke: "#116329", width: 2, scale: "share", points: {show: true}, value: percent},
      {label: "CSAT", stroke: "#7a4a00", width: 2, dash: [6, 4], scale: "share", points: {show: true}, value: percent},
    ], [data.time, data.thumbsUpRate, data.csat], [
      {scale: "share", label: "share", values: (u, ticks) => ticks.map((v) => `${Math.round(v * 100)}%`)},
    ], {share: {auto: false, range: [0, 1]}});
  }
}

document.addEventListener("DOMContentLoaded", insightsCharts);
